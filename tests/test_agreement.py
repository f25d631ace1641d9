"""Shadow agreement on hand-made answer pairs: exact, partial, duplicates, batches; counts only."""

from __future__ import annotations

import pytest

from nerops.telemetry.agreement import LabelAgreement, compare, compare_answers


def e(label: str, start: int, end: int, text: str = "Jane Doe") -> dict[str, object]:
    return {"label": label, "start": start, "end": end, "text": text}


def test_identical_answers_agree_exactly():
    answer = [e("Name", 0, 8), e("Email Address", 10, 26)]
    result = compare(answer, list(reversed(answer)))  # order does not matter
    assert result.exact
    assert result.per_label == {"Email Address": LabelAgreement(1, 0, 0), "Name": LabelAgreement(1, 0, 0)}


@pytest.mark.parametrize(
    ("candidate", "reference", "expected"),
    [
        # one boundary off by a character: no match, one on each side
        ([e("Name", 0, 8)], [e("Name", 0, 9)], {"Name": LabelAgreement(0, 1, 1)}),
        # same span, other label
        ([e("Skills", 0, 8)], [e("Name", 0, 8)], {"Name": LabelAgreement(0, 0, 1), "Skills": LabelAgreement(0, 1, 0)}),
        # the candidate finds one more
        (
            [e("Skills", 0, 4), e("Skills", 6, 10)],
            [e("Skills", 0, 4)],
            {"Skills": LabelAgreement(1, 1, 0)},
        ),
        # duplicates are a multiset: two equal entities match two, a third is left over
        ([e("Skills", 0, 4)] * 3, [e("Skills", 0, 4)] * 2, {"Skills": LabelAgreement(2, 1, 0)}),
        # nothing on either side: an exact (empty) agreement
        ([], [], {}),
    ],
)
def test_partial_agreement_counts_per_label(candidate, reference, expected):
    result = compare(candidate, reference)
    assert result.per_label == expected
    assert result.exact == all(c.candidate_only == c.reference_only == 0 for c in expected.values())


def test_text_is_never_read():
    a = compare([e("Name", 0, 8, "Jane Doe")], [e("Name", 0, 8, "someone else entirely")])
    assert a.exact  # label, start, end decide; the text is not compared, not kept
    assert "Jane" not in repr(a)


def test_answers_of_single_and_batch_requests():
    single = compare_answers({"entities": [e("Name", 0, 8)]}, {"entities": []})
    assert [x.per_label for x in single] == [{"Name": LabelAgreement(0, 1, 0)}]
    batch = compare_answers(
        {"documents": [{"entities": [e("Name", 0, 8)]}, {"entities": []}]},
        {"documents": [{"entities": [e("Name", 0, 8)]}, {"entities": [e("Skills", 3, 9)]}]},
    )
    assert [x.exact for x in batch] == [True, False]
    assert compare_answers({"documents": [{"entities": []}]}, {"entities": []}) is not None  # one document each
    assert compare_answers({"documents": []}, {"entities": []}) is None  # not the same documents
    assert compare_answers({"error": {"code": "x"}}, {"entities": []}) is None
