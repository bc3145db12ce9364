"""The hot path's JSON is what the standard library writes (text and integers byte for
byte, floats the same numbers), and takes what orjson refuses."""

from __future__ import annotations

import json
import random

from service.jsonfast import dumps, dumps_text, loads


def test_output_is_the_standard_librarys_compact_unescaped_json() -> None:
    rng = random.Random(5)
    chars = [chr(i) for i in range(0x300)] + ["\u2028", "\u2029", "\ufeff", "\U0001f600", "\ue000"]
    for _ in range(2000):
        doc = {
            "".join(rng.choices(chars, k=rng.randint(0, 6))): "".join(rng.choices(chars, k=rng.randint(0, 9)))
            for _ in range(3)
        }
        doc["n"] = [rng.randint(-(2**62), 2**62), None, True]  # type: ignore[assignment]
        assert dumps_text(doc) == json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def test_floats_read_back_as_the_same_number() -> None:
    # orjson writes 1e-6 where Python writes 1e-06: the same number for every reader.
    rng = random.Random(6)
    for _ in range(2000):
        x = rng.random() * 10 ** rng.randint(-12, 12)
        assert loads(dumps(x)) == x == json.loads(dumps(x))


def test_what_orjson_refuses_is_written_and_read_by_the_standard_library() -> None:
    wide = {"note": 2**70, 3: "int key"}
    assert dumps(wide) == json.dumps(wide, separators=(",", ":")).encode()
    assert loads(dumps({"note": 2**70})) == {"note": 2**70}
    assert loads('{"x": NaN}')["x"] != loads('{"x": NaN}')["x"]  # NaN, as json reads it
