"""The synthetic grammar: it accepts all it generates and rejects broken English, and its log-probabilities
are the sampler's, summed over every derivation."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

import pytest

from gptfit.data.grammar import (
    ADJECTIVES,
    INTRANSITIVE,
    NOUNS,
    TRANSITIVE,
    Grammar,
    GrammarSpec,
    classify,
    plural,
    split_sentences,
    third_person,
)
from gptfit.errors import UserError


def word(g: Grammar, cls: str, i: int = 0) -> str:
    """The i-th word of a class; singular and plural forms of one noun or verb share i."""
    return list(g.lexicon[cls])[i]


def derivations(g: Grammar, allowed: set[str], max_words: int) -> dict[str, list[float]]:
    """Brute force, independent of the parser: every derivation of S that uses only `allowed` words and at
    most `max_words` of them, as sentence -> the probability of each of its derivations."""
    out = defaultdict(list)

    def expand(done: tuple, pending: tuple, p: float) -> None:
        if len(done) + len(pending) > max_words:  # every pending symbol yields at least one word
            return
        if not pending:
            out[" ".join(done)].append(p)
            return
        sym, rest = pending[0], pending[1:]
        if sym in g.rules:
            for rhs, q in g.rules[sym]:
                expand(done, rhs + rest, p * q)
        else:
            for w, q in g.lexicon[sym].items():
                if w in allowed:
                    expand(done + (w,), rest, p * q)

    expand((), ("S",), 1.0)
    return out


@pytest.mark.parametrize("seed,max_depth,zipf", [(0, 0, 0.0), (1, 1, 1.0), (2, 2, 0.0), (3, 3, 1.5)])
def test_every_generated_sentence_is_accepted_and_scored_at_least_as_its_derivation(seed, max_depth, zipf):
    g = Grammar(GrammarSpec(seed=seed, max_depth=max_depth, p_relative=0.4, zipf=zipf))
    rng = random.Random(seed)
    for _ in range(500):
        sentence, derivation_logp = g.sample_derivation(rng)
        assert sentence.endswith(" .") and sentence.count(".") == 1
        assert derivation_logp - 1e-9 <= g.logprob(sentence) < 0, sentence


def test_rejects_broken_english():
    g = Grammar(GrammarSpec(max_depth=2))
    dog, dogs, cat, cats = word(g, "N_sg"), word(g, "N_pl"), word(g, "N_sg", 1), word(g, "N_pl", 1)
    runs, run, chases, chase = word(g, "Vi_sg"), word(g, "Vi_pl"), word(g, "Vt_sg"), word(g, "Vt_pl")
    accepted = [
        f"the {dog} {runs} .",
        f"  the {dog}   {runs} .\n",
        f"these {dogs} {run} .",
        f"the {dog} {chases} the {cats} .",
        f"the {dog} that the {cats} {chase} {runs} .",  # object relative: its verb agrees with "cats"
        f"the {dogs} that {chase} the {cat} {run} .",  # subject relative: its verb agrees with "dogs"
    ]
    rejected = [
        f"the {dogs} {runs} .",  # subject-verb agreement
        f"these {dog} {runs} .",  # determiner-noun agreement
        f"the {dog} that the {cats} {chases} {runs} .",
        f"the {dogs} that {chases} the {cat} {run} .",
        f"the {dog} .",  # no verb
        f"the {dog} the {cat} .",
        f"the {dog} {runs}",  # no final period
        f"the {dog} {runs} . .",
        f"the zebu {runs} .",  # unknown words
        f"the {dog} {runs} quickly .",
        f"{runs} the {dog} .",  # word order
        f"the {runs} {dog} .",
        f"{dog} the {runs} .",
        f"the {dog} {chases} .",  # a transitive verb without its object
        f"the {dog} {runs} the {cat} .",  # an intransitive verb with one
        "",
        ".",
    ]
    assert all(g.is_valid(s) for s in accepted)
    assert not any(g.is_valid(s) for s in rejected), [s for s in rejected if g.is_valid(s)]
    assert all(g.logprob(s) == -math.inf for s in rejected)


def test_relative_clauses_nest_at_most_max_depth():
    def nested(g: Grammar, depth: int) -> str:  # each clause inside the object of the one before
        dog, chases, runs = word(g, "N_sg"), word(g, "Vt_sg"), word(g, "Vi_sg")
        return f"the {dog}" + f" that {chases} the {dog}" * depth + f" {runs} ."

    shallow, deep = Grammar(GrammarSpec(max_depth=2)), Grammar(GrammarSpec(max_depth=3))
    assert shallow.is_valid(nested(shallow, 2)) and not shallow.is_valid(nested(shallow, 3))
    assert deep.is_valid(nested(deep, 3)) and not deep.is_valid(nested(deep, 4))
    assert not Grammar(GrammarSpec(max_depth=0)).is_valid(nested(shallow, 1))
    # Center embedding, object relatives: "the dog that the cat that the dog sees sees runs ."
    g = shallow
    dog, cat, sees, runs = word(g, "N_sg"), word(g, "N_sg", 1), word(g, "Vt_sg"), word(g, "Vi_sg")
    assert g.is_valid(f"the {dog} that the {cat} that the {dog} {sees} {sees} {runs} .")
    assert not g.is_valid(f"the {dog} that the {cat} that the {dog} that the {cat} {sees} {sees} {sees} {runs} .")


def test_shuffled_sentences_are_rejected_unless_the_grammar_derives_them():
    g = Grammar(GrammarSpec(seed=1))
    dog, cat, chases = word(g, "N_sg"), word(g, "N_sg", 1), word(g, "Vt_sg")
    assert g.is_valid(f"the {cat} {chases} the {dog} .")  # a shuffle of "the dog chases the cat ." that is valid
    rng = random.Random(0)
    short = [s for s in g.sentences(3000, seed=1) if 5 <= len(s.split()) <= 8][:250]
    accepted = total = 0
    for s in short:
        words = s.split()[:-1]
        brute = derivations(g, set(words) | {"."}, len(words) + 1)
        for _ in range(4):
            shuffled = words[:]
            rng.shuffle(shuffled)
            if shuffled == words:
                continue
            candidate = " ".join(shuffled) + " ."
            total += 1
            accepted += g.is_valid(candidate)
            assert g.is_valid(candidate) == (candidate in brute), candidate
    assert total > 500 and accepted / total < 0.05


def test_empirical_frequencies_match_the_probabilities():
    spec = GrammarSpec(
        n_nouns=1,
        n_verbs=2,
        n_adjectives=1,
        max_depth=1,
        p_adjective=0.1,
        p_pp=0.05,
        p_relative=0.1,
        p_vp_pp=0.05,
        p_transitive=0.2,
        p_plural=0.2,
    )
    g, n = Grammar(spec), 20_000
    counts = Counter(g.sentences(n, seed=0))
    for sentence, c in counts.most_common(5):
        p = math.exp(g.logprob(sentence))
        assert abs(c / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-4, sentence


def test_mean_length_matches_the_expected_length():
    g = Grammar()
    lengths = [len(s.split()) for s in g.sentences(20_000, seed=0)]
    expected = g.describe()["mean_length"]
    assert 8 <= expected <= 14
    assert abs(sum(lengths) / len(lengths) - expected) < 0.25


def test_probabilities_of_a_finite_language_sum_to_one():
    g = Grammar(GrammarSpec(n_nouns=2, n_verbs=2, n_adjectives=1, max_depth=0, p_pp=0, p_vp_pp=0))
    brute = derivations(g, set(g.vocabulary), max_words=20)
    assert len(brute) > 1000
    total = 0.0
    for sentence, ps in brute.items():
        lp = g.logprob(sentence)
        assert lp == pytest.approx(math.log(sum(ps)), abs=1e-9)
        total += math.exp(lp)
    assert total == pytest.approx(1.0, abs=1e-9)


def test_logprob_sums_every_derivation_of_ambiguous_sentences():
    g = Grammar(GrammarSpec(max_depth=1))
    allowed = {"the", ".", "that", word(g, "N_sg"), word(g, "N_pl"), word(g, "Adj"), word(g, "Prep")}
    allowed |= {word(g, c) for c in ("Vi_sg", "Vi_pl", "Vt_sg", "Vt_pl")}
    brute = derivations(g, allowed, max_words=13)
    ambiguous = [s for s, ps in brute.items() if len(ps) > 1]
    assert len(brute) > 2000 and len(ambiguous) > 500 and max(map(len, brute.values())) >= 3
    for sentence, ps in brute.items():
        assert g.logprob(sentence) == pytest.approx(math.log(sum(ps)), abs=1e-9), sentence


def test_pp_attachment_ambiguity_by_hand():
    s = GrammarSpec(max_depth=0)
    g = Grammar(s)
    lex = g.lexicon
    dog, cat, tree = word(g, "N_sg"), word(g, "N_sg", 1), word(g, "N_sg", 2)
    chases, near = word(g, "Vt_sg"), word(g, "Prep")
    sentence = f"the {dog} {chases} the {cat} {near} the {tree} ."
    words = lex["Det_sg"]["the"] ** 3 * lex["N_sg"][dog] * lex["N_sg"][cat] * lex["N_sg"][tree]
    words *= lex["Vt_sg"][chases] * lex["Prep"][near]
    sg = 1 - s.p_plural

    def np_(pp: bool) -> float:  # "the N (PP)": no adjective; max_depth=0 allows no relative clause
        return (1 - s.p_adjective) * (s.p_pp if pp else 1 - s.p_pp)

    # S -> NP_sg VP_sg . ; the object is singular, and so is the noun phrase inside the PP.
    on_noun = sg * np_(False) * s.p_transitive * sg * (1 - s.p_vp_pp) * np_(True) * sg * np_(False)
    on_verb = sg * np_(False) * s.p_transitive * sg * s.p_vp_pp * np_(False) * sg * np_(False)
    assert g.logprob(sentence) == pytest.approx(math.log(words * (on_noun + on_verb)), abs=1e-9)
    assert g.logprob(sentence) > math.log(words * max(on_noun, on_verb)) + 0.1


def test_rules_and_word_classes_are_distributions():
    g = Grammar(GrammarSpec(zipf=1.0))
    for options in g.rules.values():
        assert sum(p for _, p in options) == pytest.approx(1.0) and all(p > 0 for _, p in options)
    for words in g.lexicon.values():
        assert sum(words.values()) == pytest.approx(1.0)
    nouns = list(g.lexicon["N_sg"].values())
    assert nouns == sorted(nouns, reverse=True) and nouns[0] == pytest.approx(2 * nouns[1])  # Zipf ranks
    sizes = g.describe()
    assert 250 <= sizes["words"] == len(g.vocabulary) <= 350


def test_word_lists_are_inflected_and_unambiguous():
    assert [plural(w) for w in ("dog", "box", "city", "wolf", "child", "key")] == [
        "dogs",
        "boxes",
        "cities",
        "wolves",
        "children",
        "keys",
    ]
    assert [third_person(w) for w in ("chase", "watch", "carry", "play", "kiss")] == [
        "chases",
        "watches",
        "carries",
        "plays",
        "kisses",
    ]
    assert len(NOUNS) >= 150 and min(len(INTRANSITIVE), len(TRANSITIVE)) >= 75 and len(ADJECTIVES) >= 80
    g = Grammar(GrammarSpec(n_nouns=len(NOUNS), n_verbs=150, n_adjectives=len(ADJECTIVES)))
    owners = Counter(w for cls, words in g.lexicon.items() if not cls.startswith("Det") for w in words)
    assert [w for w, c in owners.items() if c > 1] == []  # no word in two classes (only "the", "no", "my" are)
    assert set(g.lexicon["Det_sg"]) & set(g.lexicon["Det_pl"]) == {"the", "no", "my"}
    assert "that" not in g.lexicon["Det_sg"]


def test_the_seed_picks_the_words():
    a, b = Grammar(GrammarSpec(seed=0)), Grammar(GrammarSpec(seed=1))
    assert a.vocabulary == Grammar(GrammarSpec(seed=0)).vocabulary and a.vocabulary != b.vocabulary
    assert a.sentences(50, seed=3) == a.sentences(50, seed=3) != a.sentences(50, seed=4)


def test_classify_counts_copied_novel_and_invalid():
    g = Grammar()
    dog, cat, runs, sleeps = word(g, "N_sg"), word(g, "N_sg", 1), word(g, "Vi_sg"), word(g, "Vi_sg", 1)
    training = {f"the {dog} {runs} .", f"the {cat} {sleeps} ."}
    generated = [f"  the  {dog} {runs} . ", f"the {cat} {runs} .", f"the {cat} {dog} .", f"{runs} ."]
    assert classify(generated, training, g) == {"n": 4, "copied": 0.25, "novel_valid": 0.25, "invalid": 0.5}
    assert classify([], training, g) == {"n": 0, "copied": 0.0, "novel_valid": 0.0, "invalid": 0.0}


def test_split_sentences_keeps_the_unfinished_tail_apart():
    assert split_sentences("the dog runs .  the cats\nsleep . . the bird") == (
        ["the dog runs .", "the cats sleep .", "."],
        "the bird",
    )
    assert split_sentences("the dog runs.") == ([], "the dog runs.")
    assert split_sentences("") == ([], "")


@pytest.mark.parametrize(
    "knob,value,allowed",
    [
        ("p_relative", 1.5, "[0, 1]"),
        ("p_plural", -0.1, "[0, 1]"),
        ("p_pp", 1.0, "[0, 1)"),
        ("n_nouns", 10_000, f"[1, {len(NOUNS)}]"),
        ("n_verbs", 1, "[2, "),
        ("n_adjectives", 0, f"[1, {len(ADJECTIVES)}]"),
        ("max_depth", -1, ">= 0"),
        ("zipf", -1.0, ">= 0"),
    ],
)
def test_bad_knobs_are_named_with_their_range(knob, value, allowed):
    with pytest.raises(UserError, match=rf"^data\.grammar\.{knob}={value!r}: must be") as e:
        Grammar(GrammarSpec(**{knob: value}))
    assert allowed in str(e.value) and "\n" not in str(e.value)


def test_every_bad_knob_is_reported_at_once():
    with pytest.raises(UserError) as e:
        Grammar(GrammarSpec(p_adjective=2.0, n_nouns=0))
    assert "data.grammar.p_adjective=2.0" in str(e.value) and "data.grammar.n_nouns=0" in str(e.value)
