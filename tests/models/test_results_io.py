"""ActivityNet results format: round trip, label names / ids, errors naming video and entry."""

import json

import numpy as np
import pytest

from avel.models.metrics.results_io import (
    ResultsFormatError,
    parse_results,
    read_results,
    results_to_json,
    write_results,
)

CLASSES = ["dog barking", "man speaking", "car engine"]


def test_round_trip_names_and_ids(tmp_path):
    preds = {"-abc": np.array([[0.5, 2.0, 2, 0.9], [1.0, 3.5, 0, 0.1]]), "v2": np.zeros((0, 4))}
    path = tmp_path / "p.json"
    write_results(path, preds, classes=CLASSES, external_data={"used": False})
    doc = json.loads(path.read_text())
    assert doc["results"]["-abc"][0] == {"segment": [0.5, 2.0], "label": "car engine", "score": 0.9}
    back = read_results(path, classes=CLASSES)
    np.testing.assert_array_equal(back.predictions["-abc"], preds["-abc"])
    assert back.predictions["v2"].shape == (0, 4) and back.version == "avel"
    assert back.external_data == {"used": False} and back.num_predictions == 2
    ids = parse_results(results_to_json(preds), classes=CLASSES)  # integer labels
    np.testing.assert_array_equal(ids.predictions["-abc"], preds["-abc"])


def test_unav_style_keys_accepted():
    doc = {"database": {"v": [{"segment": [1, 2], "label_id": 1, "scores": 0.5}]}}
    np.testing.assert_array_equal(parse_results(doc).predictions["v"], [[1, 2, 1, 0.5]])


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"segment": [1, 2], "label": "cat", "score": 0.5}, r"results/v\[1\]: label 'cat' is not one of the 3"),
        ({"segment": [1, 2], "label": 3, "score": 0.5}, r"results/v\[1\]: label id 3 is outside 0..2"),
        ({"segment": [1, 2], "label": True, "score": 0.5}, r"results/v\[1\]: \"label\" must be"),
        ({"segment": [2, 1], "label": 0, "score": 0.5}, r"results/v\[1\]: segment end 1.0 < start 2.0"),
        ({"segment": [1], "label": 0, "score": 0.5}, r"results/v\[1\]: \"segment\" must be"),
        ({"segment": [1, 2], "label": 0, "score": float("nan")}, r"results/v\[1\]: \"score\" must be"),
        ({"segment": [1, 2], "label": 0}, r"results/v\[1\]: \"score\""),
    ],
)
def test_bad_entries_name_video_and_index(entry, message):
    good = {"segment": [0, 1], "label": 0, "score": 0.1}
    with pytest.raises(ResultsFormatError, match=message):
        parse_results({"results": {"v": [good, entry]}}, classes=CLASSES, source="p.json")


def test_bad_files(tmp_path):
    with pytest.raises(ResultsFormatError, match="no such file"):
        read_results(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"results": {\n  "v": [,]}}')
    with pytest.raises(ResultsFormatError, match="bad.json: invalid JSON at line 2"):
        read_results(tmp_path / "bad.json")
    with pytest.raises(ResultsFormatError, match='expected a "results" mapping'):
        parse_results({"version": "x"})
    with pytest.raises(ResultsFormatError, match="no class list"):
        parse_results({"results": {"v": [{"segment": [0, 1], "label": "dog", "score": 1}]}})
