"""Which namespaces may use a ClusterTokenWorkspace (its `allowedNamespaces`)."""

from collections.abc import Mapping

from apitoken_operator.crd.resources import (
    AllowedNamespaces,
    LabelSelector,
    LabelSelectorOperator,
    LabelSelectorRequirement,
)


def _requirement_matches(req: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    match req.operator:
        case LabelSelectorOperator.IN:
            return req.key in labels and labels[req.key] in req.values
        case LabelSelectorOperator.NOT_IN:
            return req.key not in labels or labels[req.key] not in req.values
        case LabelSelectorOperator.EXISTS:
            return req.key in labels
        case LabelSelectorOperator.DOES_NOT_EXIST:
            return req.key not in labels


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics: every term must hold; an empty selector matches all."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    return all(_requirement_matches(r, labels) for r in selector.match_expressions)


def namespace_allowed(
    allowed: AllowedNamespaces | None, namespace: str, labels: Mapping[str, str]
) -> bool:
    """No restriction allows every namespace; otherwise listed by name or matched by selector."""
    if allowed is None:
        return True
    if namespace in allowed.names:
        return True
    return allowed.selector is not None and selector_matches(allowed.selector, labels)
