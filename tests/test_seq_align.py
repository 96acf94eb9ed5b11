import pytest
from transformers import CLIPTokenizer

from videodirector.attention.seq_align import equalizer, global_align, refinement_mapper, replacement_mapper, word_token_indices
from videodirector.errors import UserError


@pytest.fixture(scope="module")
def tok(tiny_paths):
    return CLIPTokenizer.from_pretrained(tiny_paths[0] / "tokenizer")


def test_global_align_with_gaps():
    assert global_align([1, 2, 3, 4], [1, 9, 2, 3, 4]) == [0, -1, 1, 2, 3]  # insertion
    assert global_align([1, 2, 3, 4], [1, 3, 4]) == [0, 2, 3]  # removal


def test_refine_with_inserted_word(tok):
    src, tgt = "a red circle moving right", "a big red circle moving right"
    mapper, alphas = refinement_mapper(src, tgt, tok)
    ids_t = tok.encode(tgt)
    big = word_token_indices(tgt, "big", tok)
    assert alphas[big].eq(0).all()
    red_t, red_s = word_token_indices(tgt, "red", tok), word_token_indices(src, "red", tok)
    assert mapper[red_t].tolist() == red_s and alphas[red_t].eq(1).all()
    assert mapper[len(ids_t) - 1] == len(tok.encode(src)) - 1  # EOS aligned to EOS
    assert alphas[len(ids_t):].eq(1).all()


def test_refine_with_removed_word(tok):
    src, tgt = "a red circle moving right", "a circle moving right"
    mapper, alphas = refinement_mapper(src, tgt, tok)
    c_t, c_s = word_token_indices(tgt, "circle", tok), word_token_indices(src, "circle", tok)
    assert mapper[c_t].tolist() == c_s and alphas[: len(tok.encode(tgt))].eq(1).all()


def test_substituted_word_is_new(tok):
    mapper, alphas = refinement_mapper("a brown bear walking", "a tiger walking", tok)
    assert alphas[word_token_indices("a tiger walking", "tiger", tok)].eq(0).all()


def test_word_lookup_ignores_punctuation_and_equalizer_errors(tok):
    prompt = "A tiger, walking on rocky terrain."
    assert word_token_indices(prompt, "tiger", tok) == [2]
    assert word_token_indices("a (red) circle", "red", tok) == [3]  # brackets around the word are not the word
    # punctuation inside a word is part of it, as in the official get_word_inds ("Spider-Man": 3 tokens)
    assert word_token_indices("a red-blue circle, moving", "red-blue", tok) == [2, 3, 4]
    eq = equalizer(prompt, ["tiger"], [2.0], tok)
    assert eq[2] == 2.0 and eq.sum() == 76 + 2
    with pytest.raises(UserError, match="does not appear"):
        equalizer(prompt, ["zebra"], [1.0], tok)


def test_replace_mapper_needs_equal_word_counts(tok):
    m = replacement_mapper("a red circle", "a blue circle", tok)
    assert m.shape == (77, 77) and m[2, 2] == 1.0
    with pytest.raises(UserError, match="same number of words"):
        replacement_mapper("a red circle", "a big blue circle", tok)
