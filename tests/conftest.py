import os
import sys

# Let the suite run from a plain checkout as well as from an installed package.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run only where a CUDA device is (``python -m pytest -m cuda``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _exact_float32_in_cuda_tests(request, monkeypatch):
    """CUDA tests compare float32 results with dense cuDNN / cuBLAS twins at float32 tolerances:
    TF32 (on by default for cuDNN convolutions) is switched off for them, and restored after."""
    if request.node.get_closest_marker("cuda") is not None:
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
