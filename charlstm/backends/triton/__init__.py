"""The ``triton`` backend (not implemented yet)."""
from .. import BackendUnavailable

raise BackendUnavailable("the Triton kernels are not implemented yet (issue 3)")
