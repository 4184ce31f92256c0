import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from io_data import mixed_table  # noqa: E402


@pytest.fixture
def mixed():
    return mixed_table()
