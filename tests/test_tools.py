"""The mutation tools stay aimed at the code: every named mutant's text is still there once."""

from pathlib import Path

import pytest
from named_mutants import MUTANTS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_named_mutant_still_applies(mutant):
    text = (ROOT / mutant.path).read_text()
    assert text.count(mutant.old) == 1, f"{mutant.name}: update it to {mutant.path}"
    for test in mutant.tests:
        assert (ROOT / test.split("::")[0]).is_file(), test
