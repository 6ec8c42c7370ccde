"""Consumer filters: disjoint, covering, bounded in number."""

from hypothesis import given
from hypothesis import strategies as st

from logstream.services.gateway.subjects import MAX_FILTERS, covering_filters, covers, overlaps

TOKENS = st.sampled_from(["a", "b", "c", "*"])
SUBJECTS = st.builds(
    lambda parts: ".".join(["logs", *parts]), st.lists(TOKENS, min_size=2, max_size=3)
)
CONCRETE = st.builds(
    lambda parts: ".".join(["logs", *parts]),
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=3),
)


def test_a_wildcard_covers_the_subjects_it_matches():
    assert covers("logs.etl.*", "logs.etl.ws1")
    assert not covers("logs.etl.*", "logs.etl.ws1.x")
    assert covers("logs.>", "logs.etl.ws1.x")


def test_overlapping_filters_are_merged_into_one_that_covers_both():
    filters = covering_filters(["logs.etl.ws1.wf", "logs.etl.ws1.*", "logs.*.ws1.x"])
    assert all(not overlaps(x, y) for i, x in enumerate(filters) for y in filters[i + 1 :])
    for subject in ["logs.etl.ws1.wf", "logs.etl.ws1.zzz", "logs.faas.ws1.x"]:
        assert any(covers(f, subject) for f in filters)


@given(st.lists(SUBJECTS, min_size=1, max_size=12), st.lists(CONCRETE, max_size=10))
def test_filters_are_disjoint_and_match_everything_wanted(wanted, samples):
    filters = covering_filters(wanted)
    assert all(not overlaps(x, y) for i, x in enumerate(filters) for y in filters[i + 1 :])
    for subject in samples:
        if any(covers(w, subject) for w in wanted):
            assert any(covers(f, subject) for f in filters)


def test_thousands_of_channels_collapse_to_a_bounded_filter_list():
    wanted = [f"logs.etl.ws{i % 50}.wf{i}" for i in range(5000)]
    filters = covering_filters(wanted)
    assert len(filters) <= MAX_FILTERS
    assert all(any(covers(f, w) for f in filters) for w in wanted)
