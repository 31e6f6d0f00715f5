"""Policy YAML: any file (mutated real policies, random YAML, random bytes) is
loaded as a policy or reported as errors with a Chinese message and a line;
never an exception, and one bad file never stops the others loading."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import event, given, settings, strategies as st

from pipelines import policies
from tests.conftest import ROOT
from tests.hardening.conftest import budget
from tests.hardening.strategies import CJK, NASTY

pytestmark = pytest.mark.fuzz
SAMPLES = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "data" / "policies").glob("*.yaml"))]

scalars = st.one_of(st.sampled_from(NASTY), st.text(max_size=20), st.integers(), st.floats(), st.booleans(),
                    st.none(), st.dates().map(str), st.just("!!python/object:os.system"), st.just("*anchor"),
                    st.just("&a [*a]"), st.just("{"), st.just("- - -"), st.just("'unterminated"))


@st.composite
def mutated_policy(draw) -> str:
    """A real policy with lines dropped, duplicated or replaced, or a value swapped for a hostile one."""
    lines = draw(st.sampled_from(SAMPLES)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop", "dup", "value", "indent", "junk"]))
        if how == "drop":
            del lines[i]
        elif how == "dup":
            lines.insert(i, lines[i])
        elif how == "value" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {draw(scalars)}"
        elif how == "indent":
            lines[i] = " " * draw(st.integers(1, 3)) + lines[i]
        else:
            lines.insert(i, str(draw(scalars)))
        if not lines:
            break
    return "\n".join(lines)


def yaml_docs():
    leaf = st.one_of(scalars.filter(lambda v: not isinstance(v, float) or v == v), st.dates())
    tree = st.recursive(leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                        max_leaves=12)
    return tree.map(lambda doc: yaml.safe_dump(doc, allow_unicode=True))


def check(policy, errors):
    if policy is None:
        assert errors and all(CJK.search(e.message) for e in errors), errors
        assert all(isinstance(e.line, int) and e.line >= 0 for e in errors)
    else:
        assert errors == []


@settings(max_examples=budget(150))
@given(text=st.one_of(mutated_policy(), mutated_policy(), yaml_docs(), st.text(max_size=300)))
def test_any_text_is_a_policy_or_errors(text):
    policy, errors = policies.load_text(text, "fuzz.yaml")
    check(policy, errors)
    event("policy" if policy else "errors")


@settings(max_examples=budget(25))
@given(raw=st.one_of(st.binary(max_size=300), mutated_policy().map(lambda t: t.encode("gbk", errors="replace"))))
def test_a_bad_file_does_not_stop_the_others(raw):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        (folder / "zz_fuzz.yaml").write_bytes(raw)
        (folder / "good.yaml").write_text(SAMPLES[0], encoding="utf-8")
        found, errors = policies.load_dir(folder)
    assert all(CJK.search(e.message) for e in errors)
    good_id = yaml.safe_load(SAMPLES[0])["id"]
    # the good file loads unless the fuzzed file claims the same id (then both are held back, by design)
    assert good_id in {p.id for p in found} or any("重复" in e.message for e in errors)


def test_a_self_referencing_anchor_is_an_error_not_a_recursion_crash():
    """Found by the long fuzz run: `&a [*a]` made the line-keeping YAML reader recurse forever."""
    policy, errors = policies.load_text("id: X\nconditions: &a [*a]\n", "a.yaml")
    assert policy is None and "锚点" in errors[0].message
