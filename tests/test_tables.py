"""implicit_rec.tables.markdown_table and implicit_rec.params.count_params."""

import pytest
from flax import nnx

from implicit_rec.params import count_params
from implicit_rec.tables import markdown_table


def test_markdown_table_layout_and_alignment():
    text = markdown_table(["model", "AUC"], [["din", "0.6300"], ["mlp", 0.62]])
    assert text.splitlines() == ["| model | AUC |", "|---|---:|", "| din | 0.6300 |", "| mlp | 0.62 |"]
    assert markdown_table(["a", "b", "c"], [], align="rlr").splitlines()[1] == "|---:|---|---:|"


@pytest.mark.parametrize(
    "header, rows, align, message",
    [
        (["a", "b"], [["1"]], None, "row 0 has 1 cells for 2 columns"),
        (["a", "b"], [], "l", "one 'l' or 'r' per column"),
        (["a", "b"], [], "lc", "one 'l' or 'r' per column"),
    ],
)
def test_markdown_table_refuses_ragged_rows_and_bad_alignment(header, rows, align, message):
    with pytest.raises(ValueError, match=message):
        markdown_table(header, rows, align)


def test_count_params_counts_params_only():
    class Net(nnx.Module):
        def __init__(self):
            self.dense = nnx.Linear(3, 4, rngs=nnx.Rngs(0))  # 3 * 4 + 4
            self.norm = nnx.BatchNorm(4, rngs=nnx.Rngs(0))  # scale + bias 8; running stats are not params

    assert count_params(Net()) == 3 * 4 + 4 + 8
