"""The CLI's bounded argument types: the edges are accepted, one step past them is refused with
"expected ..., got ..." (argparse turns it into a one-line usage error, exit 2)."""

from __future__ import annotations

import argparse
import re

import pytest

from camlens.cli.options import bounded, non_negative_int, positive_int, unit_float
from camlens.cli.serve import port_number


@pytest.mark.parametrize(("parse", "good", "bad", "message"), [
    (non_negative_int, {"0": 0, "7": 7}, ["-1", "1.5", "x"], "expected an integer >= 0"),
    (positive_int, {"1": 1, "16": 16}, ["0", "-3", "two"], "expected a positive integer"),
    (unit_float, {"0": 0.0, "1": 1.0, "0.005": 0.005}, ["-0.01", "1.01", "nan", "half"],
     "expected a number in [0, 1]"),
    (port_number, {"0": 0, "65535": 65535, "8000": 8000}, ["-1", "65536", "http"],
     "expected a port number 0-65535"),
])
def test_bounds(parse, good, bad, message):
    for text, value in good.items():
        assert parse(text) == value and type(parse(text)) is type(value)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match="^" + re.escape(message) + ", got "):
            parse(text)
    with pytest.raises(argparse.ArgumentTypeError, match=r"got 'x1'$"):
        parse("x1")  # what did not parse is quoted as typed


def test_range_error_names_the_parsed_value_and_argparse_exits_2(capsys):
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected even, got 3$"):
        bounded(int, lambda v: v % 2 == 0, "even")("3")
    p = argparse.ArgumentParser(prog="camlens x")
    p.add_argument("--top-k", type=positive_int)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--top-k", "0"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "camlens x: error: argument --top-k: expected a positive integer, got 0")
