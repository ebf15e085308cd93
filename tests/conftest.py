import pytest

import jittor_env  # noqa: F401  (before any test imports jittor)
import jittor as jt


@pytest.fixture
def float64():
    """Keep float64 arrays float64 inside Jittor, for comparisons at 1e-10."""
    with jt.flag_scope(auto_convert_64_to_32=0):
        yield
