"""Tests for emobed_jax.features.arff: the AVEC ARFF reader on good and malformed files."""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.io.arff

from emobed_jax.features.arff import ArffError, numeric_feature_names, read_arff, read_arff_header

GOOD = """% AVEC-style feature file
@RELATION 'features video'

@attribute Instance_name string
@Attribute frameTime NUMERIC
@attribute f1 real
% a comment between attributes
@attribute 'f 2' integer

@DATA

'train_1',0.00,1.5,2
"train_1",0.04,-2.25e-1,3

train_1, 0.08 ,?,4
% trailing comment
"""


def _write(tmp_path, text, name="x.arff"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_reads_quoted_unquoted_names_comments_and_blank_lines(tmp_path):
    data = read_arff(_write(tmp_path, GOOD))
    assert data.relation == "features video"
    assert data.attributes == (("Instance_name", "string"), ("frameTime", "numeric"),
                               ("f1", "numeric"), ("f 2", "numeric"))
    assert data.names == ("train_1", "train_1", "train_1")
    assert data.num_rows == 3
    np.testing.assert_allclose(data.frame_times, [0.0, 0.04, 0.08])
    assert data.frame_times.dtype == np.float64
    assert data.feature_names == ("f1", "f 2")
    assert data.values.dtype == np.float32 and data.values.shape == (3, 2)
    np.testing.assert_allclose(data.values[:2], [[1.5, 2.0], [-0.225, 3.0]])
    assert np.isnan(data.values[2, 0]) and data.values[2, 1] == 4.0  # '?' is ARFF's missing value


def test_header_only_reader_agrees(tmp_path):
    path = _write(tmp_path, GOOD)
    relation, attributes = read_arff_header(path)
    full = read_arff(path)
    assert (relation, attributes) == (full.relation, full.attributes)
    assert numeric_feature_names(attributes) == full.feature_names


def test_string_columns_anywhere_and_commas_inside_quotes(tmp_path):
    text = ("@relation r\n@attribute a numeric\n@attribute who string\n@attribute b numeric\n"
            "@attribute mood {calm,angry}\n@data\n1,'a,b',2,calm\n3,\"c, d\",4,angry\n")
    data = read_arff(_write(tmp_path, text))
    assert data.strings == {"who": ("a,b", "c, d"), "mood": ("calm", "angry")}
    assert data.names == ("a,b", "c, d")
    assert data.frame_times is None
    np.testing.assert_array_equal(data.values, [[1, 2], [3, 4]])


def test_matches_scipy_on_a_numeric_file(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 7))
    lines = ["@relation r", "@attribute frameTime numeric"]
    lines += [f"@attribute f{i} numeric" for i in range(7)] + ["@data"]
    lines += [f"{t * 0.04:.2f}," + ",".join(f"{v:.7g}" for v in row) for t, row in enumerate(values)]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    ours = read_arff(path)
    reference, _ = scipy.io.arff.loadarff(path)
    np.testing.assert_allclose(ours.frame_times, reference["frameTime"])
    np.testing.assert_allclose(ours.values, np.stack([reference[f"f{i}"] for i in range(7)], 1),
                               rtol=1e-6)


HEADER = "@relation r\n@attribute Instance_name string\n@attribute frameTime numeric\n" \
         "@attribute f1 numeric\n@attribute f2 numeric\n\n@data\n"  # @data is line 7


@pytest.mark.parametrize("rows, line, fragment", [
    ("'a',0.00,1,2\n'a',0.04,1\n", 9, "row has 3 columns, expected 4"),
    ("'a',0.00,1,2\n\n% c\n'a',0.04,1,2,3\n", 11, "row has 5 columns, expected 4"),
    ("'a',0.00,1,2\n'a',0.04,1,abc\n", 9, "column 4 ('f2') holds 'abc', expected a number"),
    ("'a',0.00,,2\n", 8, "column 3 ('f1') holds '', expected a number"),
    ("{0 'a', 2 1}\n", 8, "sparse ARFF rows"),
])
def test_malformed_rows_name_file_and_line(tmp_path, rows, line, fragment):
    path = _write(tmp_path, HEADER + rows)
    with pytest.raises(ArffError) as err:
        read_arff(path)
    assert f"{path}:{line}:" in str(err.value)
    assert fragment in str(err.value)


@pytest.mark.parametrize("text, line, fragment", [
    ("@relation r\n@attribute a numeric\n\n'x',1\n", 4, "unexpected line in the ARFF header"),
    ("@relation r\n@attribute a numeric\n% no data\n", 3, "no @data section"),
    ("@relation r\n@attribute\n@data\n", 2, "malformed @attribute line"),
    ("@relation r\n@attribute a relational\n@data\n", 2, "unsupported type 'relational'"),
    ("@relation r\n\n@data\n1\n", 3, "@data before any @attribute"),
])
def test_malformed_headers_name_file_and_line(tmp_path, text, line, fragment):
    path = _write(tmp_path, text)
    for reader in (read_arff, read_arff_header):
        with pytest.raises(ArffError, match=re.escape(f"{path}:{line}:")) as err:
            reader(path)
        assert fragment in str(err.value)


def test_byte_order_mark_and_crlf_line_ends(tmp_path):
    path = tmp_path / "bom.arff"
    path.write_bytes(b"\xef\xbb\xbf@relation r\r\n@attribute a numeric\r\n@data\r\n1.5\r\n")
    np.testing.assert_array_equal(read_arff(path).values, [[1.5]])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.arff"):
        read_arff(tmp_path / "nope.arff")


def test_error_is_a_value_error():
    assert issubclass(ArffError, ValueError)
