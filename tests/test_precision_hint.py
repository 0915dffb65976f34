"""train.py's start-up hint on a machine with native bf16 names the speed-up the fp32-against-bf16 study
measured, and that figure is the one docs/speed.md's table gives (one fact, checked in two places)."""
import os
import re

import train
from conftest import ROOT


def study_section():
    text = open(os.path.join(ROOT, "docs", "speed.md")).read()
    return text[text.index("## fp32 against bf16 as a study"):]


def test_the_hint_names_the_tables_speedup_and_only_where_bf16_is_native(monkeypatch):
    section = study_section()
    if train.BF16_STUDY_SPEEDUP is None:  # the study did not support bf16: the page says where it differs
        assert "no hint" in section
        assert train.precision_hint("none", "cpu") is None
        return
    found = re.search(r"bf16 trained ([0-9.]+)x as fast as fp32", section)
    assert found and float(found.group(1)) == round(train.BF16_STUDY_SPEEDUP, 2), "docs/speed.md and train.py differ"
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: True)
    hint = train.precision_hint("none", "cpu")
    assert hint and f"{train.BF16_STUDY_SPEEDUP:.2f}x" in hint and train.BF16_STUDY_PAGE in hint
    assert train.precision_hint("bf16", "cpu") is None  # already in bf16
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: False)
    assert train.precision_hint("none", "cpu") is None  # emulated bf16 is slower: no hint
    anchor = train.BF16_STUDY_PAGE.split("#")[1]
    assert anchor == "fp32-against-bf16-as-a-study"
