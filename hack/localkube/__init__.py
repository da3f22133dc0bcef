"""A real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager).

Used by `make dev` (``python -m localkube``) and by the pytest fixtures, envtest-style: no nodes,
no Docker, processes on loopback ports, state in a temporary folder removed on exit.
"""

from localkube.controlplane import Cluster, ControlPlane, existing_cluster, start_control_plane

__all__ = ["Cluster", "ControlPlane", "existing_cluster", "start_control_plane"]
