"""The custom resources as the operator reads them: typed models, names, condition reasons."""
