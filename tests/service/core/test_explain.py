"""Word contributions: their sum and sign rules on a model whose answer is known by construction,
the words a person sees, and variants padded in one batch read as each alone by the real graph."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service.core.errors import InvalidInput
from service.core.explain import Method, Word, explanation, passes_for, plan
from service.core.preprocess import Preprocessor
from service.core.results import AttentionMode, softmax
from service.ops.settings import Settings
from service.versions.assembly import build_engine

# a bag-of-words model: the positive logit is the sum of its words' weights, the negative one minus it
WEIGHTS = {10: 2.0, 11: -3.0, 12: 0.0, 13: 0.7, 14: 0.0}
CLS, SEP = 101, 102


def bag_of_words(sequences: list[list[int]]) -> np.ndarray:
    scores = np.array([sum(WEIGHTS.get(t, 0.0) for t in s) for s in sequences], np.float32)
    return softmax(np.stack([-scores, scores], axis=1))


def text(*ids: int) -> tuple[list[int], list[Word]]:
    words = [Word(f"w{t}", 0, 0, (position + 1,)) for position, t in enumerate(ids)]
    return [CLS, *ids, SEP], words


@pytest.mark.parametrize("method", [Method.SHAPLEY, Method.OCCLUSION])
def test_a_word_that_moves_nothing_contributes_nothing_and_signs_follow_the_weights(method: Method) -> None:
    ids, words = text(10, 12, 11, 14, 13)  # good, neutral, bad, neutral, slightly good
    chosen = plan(ids, words, method)
    assert len(chosen.sequences) == passes_for(method, len(words))
    result = explanation(chosen, bag_of_words(chosen.sequences))
    assert result.label_index == 0  # 2 - 3 + 0.7 < 0: negative
    towards_negative = result.contributions
    assert towards_negative[1] == 0 and towards_negative[3] == 0  # weight 0: exactly nothing
    assert towards_negative[2] > 0  # "bad" pushes towards the negative answer
    assert towards_negative[0] < 0 and towards_negative[4] < 0  # the good words push away from it
    assert abs(towards_negative[2]) > abs(towards_negative[0]) > abs(towards_negative[4])


def test_shapley_contributions_add_up_to_the_answer_less_the_baseline() -> None:
    for ids_words in (text(10, 11, 13), text(10, 12, 11, 14, 13, 10, 11), text(13)):
        chosen = plan(*ids_words, Method.SHAPLEY)
        probabilities = bag_of_words(chosen.sequences)
        result = explanation(chosen, probabilities)
        label = result.label_index
        assert result.baseline == pytest.approx(float(probabilities[1, label]))
        assert float(result.contributions.sum()) == pytest.approx(
            float(probabilities[0, label]) - result.baseline, abs=1e-6
        )


def test_two_words_and_both_orders_give_the_exact_shapley_values() -> None:
    ids, words = text(10, 13)
    chosen = plan(ids, words, Method.SHAPLEY)
    result = explanation(chosen, bag_of_words(chosen.sequences))
    label = result.label_index
    v = {
        frozenset(): bag_of_words([[CLS, SEP]])[0, label],
        frozenset({0}): bag_of_words([[CLS, 10, SEP]])[0, label],
        frozenset({1}): bag_of_words([[CLS, 13, SEP]])[0, label],
        frozenset({0, 1}): bag_of_words([ids])[0, label],
    }
    exact_first = 0.5 * ((v[frozenset({0})] - v[frozenset()]) + (v[frozenset({0, 1})] - v[frozenset({1})]))
    exact_second = 0.5 * ((v[frozenset({1})] - v[frozenset()]) + (v[frozenset({0, 1})] - v[frozenset({0})]))
    assert result.contributions.tolist() == pytest.approx([exact_first, exact_second], abs=1e-6)


def test_occlusion_is_the_drop_when_the_word_is_left_out() -> None:
    ids, words = text(10, 11, 13)
    chosen = plan(ids, words, Method.OCCLUSION)
    result = explanation(chosen, bag_of_words(chosen.sequences))
    label = result.label_index
    full = bag_of_words([ids])[0, label]
    for index, token in enumerate([10, 11, 13]):
        alone = bag_of_words([[CLS, *[t for t in (10, 11, 13) if t != token], SEP]])[0, label]
        assert result.contributions[index] == pytest.approx(full - alone, abs=1e-6)


def test_the_same_text_gets_the_same_orders_and_another_text_other_orders() -> None:
    ids, words = text(*range(20, 40))
    first, again = plan(ids, words, Method.SHAPLEY), plan(ids, words, Method.SHAPLEY)
    assert [o.tolist() for o in first.orders] == [o.tolist() for o in again.orders]
    assert first.orders[1].tolist() == first.orders[0][::-1].tolist()  # an order and its reverse
    other_ids, other_words = text(*range(21, 41))
    assert plan(other_ids, other_words, Method.SHAPLEY).orders[0].tolist() != first.orders[0].tolist()


def test_words_are_what_a_person_sees(model_dir: Path) -> None:
    pre = Preprocessor(model_dir / "tokenizer.json", 64, 8, 10_000)
    sentence = "The staff wasn't helpful!! A well-made, 'quiet' seat."
    words = pre.words([sentence])[0]
    assert [w.text for w in words] == [
        "The", "staff", "wasn't", "helpful", "!!", "A", "well-made", ",", "'", "quiet", "'", "seat", ".",
    ]  # fmt: skip
    assert all(sentence[w.start : w.stop] == w.text for w in words)
    encoded = pre.tokenize([sentence])[0]
    covered = sorted(t for w in words for t in w.tokens)
    assert covered == list(range(1, len(encoded.ids) - 1))  # every token but [CLS] and [SEP], once
    long = " ".join(["word"] * 200)
    read = pre.words([long])[0]  # only the words the model reads: 64 tokens less [CLS] and [SEP]
    assert sum(len(w.tokens) for w in read) == 62 and read[-1].tokens[-1] == 62


def test_variants_padded_in_one_batch_read_as_each_alone(model_root: Path) -> None:
    engine = build_engine(Settings(model_dir=model_root))
    pre = engine.preprocessor
    sentence = "I wanted to like this movie, but it never comes together."
    encoded, words = pre.tokenize([sentence])[0], pre.words([sentence])[0]
    for method in (Method.SHAPLEY, Method.OCCLUSION):
        sequences = plan(encoded.ids, words, method).sequences
        width = max(map(len, sequences))
        ids = np.zeros((len(sequences), width), np.int64)
        mask = np.zeros_like(ids)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)], mask[row, : len(sequence)] = sequence, 1
        together = softmax(engine.model.run(ids, mask, with_attention=False)[0])
        for row, sequence in enumerate(sequences):
            one = np.array([sequence], np.int64)
            alone = softmax(engine.model.run(one, np.ones_like(one), with_attention=False)[0])
            assert np.abs(alone[0] - together[row]).max() < 1e-5


async def test_the_engine_explains_a_text_as_the_core_does_and_keeps_its_limits(model_root: Path) -> None:
    engine = build_engine(Settings(model_dir=model_root, max_explained_words=20))
    await engine.start()
    try:
        sentence = "The flight was delayed four hours and the staff were rude."
        plain, explained = await asyncio.gather(
            engine.predict([sentence], AttentionMode.NONE, None),
            engine.predict([sentence, "Fine."], AttentionMode.SUMMARY, None, explain=Method.SHAPLEY),
        )
        result = explained[0]
        assert plain[0].explanation is None and result.explanation is not None
        assert result.probabilities.tolist() == pytest.approx(plain[0].probabilities.tolist(), abs=1e-5)
        assert result.attention is not None  # the text still gets what it asked for
        words = [w.text for w in result.explanation.words]
        assert words == sentence[:-1].split() + ["."]
        label = result.explanation.label_index
        total = float(result.explanation.contributions.sum())
        assert total == pytest.approx(
            float(result.probabilities[label]) - result.explanation.baseline, abs=1e-4
        )
        assert explained[1].explanation is not None and len(explained[1].explanation.words) == 2
        with pytest.raises(InvalidInput, match="explain 24 words; the limit is 20"):
            await engine.predict([sentence, sentence], AttentionMode.NONE, None, explain=Method.OCCLUSION)
    finally:
        await engine.stop()
