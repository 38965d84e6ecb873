"""The ``cuda`` backend (not implemented yet)."""
from .. import BackendUnavailable

raise BackendUnavailable("the CUDA C++ kernels are not implemented yet (issue 4)")
