"""A synthetic English-like language with known ground truth: a probabilistic context-free grammar.

Every sentence is `NP VP .`, with subject-verb agreement, adjectives, prepositional phrases on noun
and verb phrases, and subject or object relative clauses nested at most `max_depth` deep:

    the old dog that the cats chase sleeps .

Number (sg/pl) and relative-clause depth are compiled into the nonterminals (`NP_sg_1`), so the
grammar is a finite PCFG. Sampling and parsing read the same rule table, so `Grammar.logprob` is the
exact probability of the sampler producing a sentence, summed over all its derivations. A generated
sentence is then copied (in the training set), novel and valid (the grammar accepts it), or invalid.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterable
from itertools import accumulate

from gptfit.config.grammar import (
    ADJECTIVES,
    DET_ANY,
    DET_PL,
    DET_SG,
    INTRANSITIVE,
    NOUNS,
    NUMBERS,
    PLURALS,
    PREPOSITIONS,
    TRANSITIVE,
    GrammarSpec,
    check,
)


def plural(noun: str) -> str:
    if noun in PLURALS:
        return PLURALS[noun]
    if noun.endswith(("s", "sh", "ch", "x", "z")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def third_person(verb: str) -> str:
    """The 3rd-person-singular present ("chases") of a verb's plain form ("chase")."""
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _ranked(words: list[str], zipf: float) -> dict[str, float]:
    weights = [(r + 1) ** -zipf for r in range(len(words))]
    total = sum(weights)
    return {w: x / total for w, x in zip(words, weights)}


def _uniform(words: list[str]) -> dict[str, float]:
    return {w: 1 / len(words) for w in words}


def lexicon(spec: GrammarSpec) -> dict[str, dict[str, float]]:
    """Word class -> {word: probability}; the seed draws the words and their order (their Zipf rank)."""
    rng = random.Random(spec.seed)
    nouns = rng.sample(NOUNS, spec.n_nouns)
    intransitive = rng.sample(INTRANSITIVE, spec.n_verbs // 2)
    transitive = rng.sample(TRANSITIVE, spec.n_verbs - spec.n_verbs // 2)
    adjectives = rng.sample(ADJECTIVES, spec.n_adjectives)
    z = spec.zipf
    return {
        "Det_sg": _uniform(DET_ANY + DET_SG),
        "Det_pl": _uniform(DET_ANY + DET_PL),
        "N_sg": _ranked(nouns, z),
        "N_pl": _ranked([plural(n) for n in nouns], z),
        "Vi_sg": _ranked([third_person(v) for v in intransitive], z),
        "Vi_pl": _ranked(intransitive, z),
        "Vt_sg": _ranked([third_person(v) for v in transitive], z),
        "Vt_pl": _ranked(transitive, z),
        "Adj": _ranked(adjectives, z),
        "Prep": _uniform(PREPOSITIONS),
        "That": {"that": 1.0},
        "End": {".": 1.0},
    }


Slot = list[tuple[tuple[str, ...], float]]  # alternatives for one stretch of a rule: (symbols, probability)


def _seq(*slots: Slot) -> list[tuple[tuple[str, ...], float]]:
    """Every way to fill the slots in order, as (right-hand side, probability); zero-probability ways dropped."""
    out = [((), 1.0)]
    for slot in slots:
        out = [(rhs + s, p * q) for rhs, p in out for s, q in slot]
    return [(rhs, p) for rhs, p in out if p > 0]


def _one(sym: str) -> Slot:
    return [((sym,), 1.0)]


def _maybe(sym: str, p: float) -> Slot:
    return [((), 1 - p), ((sym,), p)]


def rules(spec: GrammarSpec) -> dict[str, list[tuple[tuple[str, ...], float]]]:
    """Nonterminal -> [(right-hand side, probability)]; word classes (`lexicon` keys) are the terminals."""
    s = spec
    number = {"sg": 1 - s.p_plural, "pl": s.p_plural}

    def np_(d: int) -> Slot:  # a noun phrase of either number
        return [((f"NP_{n}_{d}",), p) for n, p in number.items()]

    table = {"S": _seq([((f"NP_{n}_0", f"VP_{n}_0"), p) for n, p in number.items()], _one("End"))}
    for d in range(s.max_depth + 1):
        table[f"PP_{d}"] = _seq(_one("Prep"), np_(d))
        for n in NUMBERS:
            p_rel = s.p_relative if d < s.max_depth else 0.0
            table[f"NP_{n}_{d}"] = _seq(
                _one(f"Det_{n}"),
                _maybe("Adj", s.p_adjective),
                _one(f"N_{n}"),
                _maybe(f"PP_{d}", s.p_pp),
                _maybe(f"RC_{n}_{d}", p_rel),
            )
            verb = [((f"Vi_{n}",), 1 - s.p_transitive)]
            verb += [((f"Vt_{n}", f"NP_{m}_{d}"), s.p_transitive * p) for m, p in number.items()]
            table[f"VP_{n}_{d}"] = _seq(verb, _maybe(f"PP_{d}", s.p_vp_pp))
            if d < s.max_depth:
                # Subject relative: the head noun is the clause's subject, so its verb agrees with the head.
                # Object relative: the head is the object; the verb agrees with the clause's own subject.
                body = [((f"VP_{n}_{d + 1}",), 1 - s.p_object_relative)]
                body += [((f"NP_{m}_{d + 1}", f"Vt_{m}"), s.p_object_relative * p) for m, p in number.items()]
                table[f"RC_{n}_{d}"] = _seq(_one("That"), body)
    return table


def _add(logps: dict[int, float], j: int, v: float) -> None:
    """logps[j] += exp(v), in log space: another derivation of the same span."""
    old = logps.get(j)
    if old is None:
        logps[j] = v
    else:
        hi, lo = (old, v) if old > v else (v, old)
        logps[j] = hi + math.log1p(math.exp(lo - hi))


def normalize(sentence: str) -> str:
    return " ".join(sentence.split())


class Grammar:
    """The PCFG of a spec: sample sentences, recognize them, and score them exactly."""

    def __init__(self, spec: GrammarSpec | None = None):
        spec = spec if spec is not None else GrammarSpec()
        check(spec)
        self.spec = spec
        self.lexicon = lexicon(spec)
        self.rules = rules(spec)
        self.vocabulary = sorted({w for words in self.lexicon.values() for w in words})
        # Sampling tables: symbol -> (cumulative probabilities, choices, log-probabilities, is a word class).
        self._draw = {}
        for sym, options in [*self.rules.items(), *((c, list(ws.items())) for c, ws in self.lexicon.items())]:
            cum = list(accumulate(p for _, p in options))
            cum[-1] = 1.0  # rng.random() < 1, so the last choice is always reachable
            self._draw[sym] = (cum, [x for x, _ in options], [math.log(p) for _, p in options], sym in self.lexicon)
        # Parsing tables, in log-probabilities: word -> {class: log p}, and the rules with their nonterminals
        # in an order where each comes after those its rules start with (there is no left recursion).
        self._classes = {}
        for c, ws in self.lexicon.items():
            for w, p in ws.items():
                self._classes.setdefault(w, {})[c] = math.log(p)
        self._log_rules = {lhs: [(rhs, math.log(p)) for rhs, p in options] for lhs, options in self.rules.items()}
        self._order = sorted(self.rules, key=self._left_depth)

    def _left_depth(self, sym: str) -> int:
        firsts = [rhs[0] for rhs, _ in self.rules[sym] if rhs[0] in self.rules]
        return 1 + max(map(self._left_depth, firsts)) if firsts else 0

    def sample_derivation(self, rng: random.Random) -> tuple[str, float]:
        """One sentence, and the log-probability of the derivation that produced it."""
        words, logp, stack = [], 0.0, ["S"]
        draw, random_ = self._draw, rng.random
        while stack:
            cum, choices, logps, is_class = draw[stack.pop()]
            k = bisect_right(cum, random_()) if len(cum) > 1 else 0
            logp += logps[k]
            if is_class:
                words.append(choices[k])
            else:
                stack.extend(reversed(choices[k]))
        return " ".join(words), logp

    def sample(self, rng: random.Random) -> str:
        return self.sample_derivation(rng)[0]

    def sentences(self, n: int, seed: int) -> list[str]:
        """n independent draws (repeats included)."""
        rng = random.Random(seed)
        return [self.sample_derivation(rng)[0] for _ in range(n)]

    def logprob(self, sentence: str) -> float:
        """Natural-log probability of the sentence under the grammar (all derivations); -inf if not in it."""
        words = sentence.split()
        try:
            classes = [self._classes[w] for w in words]
        except KeyError:
            return -math.inf
        n, table = len(words), self._log_rules
        # Inside algorithm, right to left: chart[i][sym] = {j: log P(sym derives words[i:j])}. A rule is
        # walked symbol by symbol, keeping the log-probability of each position its prefix can reach.
        chart: list[dict[str, dict[int, float]]] = [{} for _ in range(n + 1)]
        for i in range(n - 1, -1, -1):
            for sym in self._order:
                out: dict[int, float] = {}
                for rhs, logp in table[sym]:
                    ends = {i: logp}
                    for x in rhs:
                        nxt: dict[int, float] = {}
                        for k, q in ends.items():
                            if x in table:
                                reach = chart[k].get(x, {}).items()
                            else:
                                r = classes[k].get(x) if k < n else None
                                reach = () if r is None else ((k + 1, r),)
                            for j, r in reach:
                                _add(nxt, j, q + r)
                        ends = nxt
                        if not ends:
                            break
                    for j, q in ends.items():
                        _add(out, j, q)
                if out:
                    chart[i][sym] = out
        return chart[0].get("S", {}).get(n, -math.inf)

    def is_valid(self, sentence: str) -> bool:
        return self.logprob(sentence) > -math.inf

    def describe(self) -> dict[str, float]:
        """Sizes of the grammar and its expected sentence length in words (the final "." counted)."""
        import numpy as np  # here only: gptfit.config imports this module before any heavy import

        syms = list(self.rules)
        index = {s: i for i, s in enumerate(syms)}
        # Expected yield length: E[X] = sum over X's rules of p * (word classes + E of each nonterminal).
        a, b = np.eye(len(syms)), np.zeros(len(syms))
        for s, options in self.rules.items():
            for rhs, p in options:
                for x in rhs:
                    if x in index:
                        a[index[s], index[x]] -= p
                    else:
                        b[index[s]] += p
        return {
            "words": len(self.vocabulary),
            "nonterminals": len(syms),
            "rules": sum(map(len, self.rules.values())),
            "lexical_rules": sum(map(len, self.lexicon.values())),
            "mean_length": float(np.linalg.solve(a, b)[index["S"]]),
        }


def split_sentences(text: str) -> tuple[list[str], str]:
    """Generated text as its complete sentences (each ending with the word "."), normalized, and the tail."""
    sentences, current = [], []
    for w in text.split():
        current.append(w)
        if w == ".":
            sentences.append(" ".join(current))
            current = []
    return sentences, " ".join(current)


def classify(sentences: Iterable[str], training_sentences: set[str], grammar: Grammar) -> dict[str, float]:
    """Shares of sentences copied from training, novel and valid, or invalid, and their number `n`.

    Sentences are normalized (whitespace collapsed) before the lookup; `training_sentences` must be
    normalized already, as the grammar's own output is.
    """
    copied = valid = invalid = 0
    for s in map(normalize, sentences):
        if s in training_sentences:
            copied += 1
        elif grammar.is_valid(s):
            valid += 1
        else:
            invalid += 1
    n = copied + valid + invalid
    if n == 0:
        return {"n": 0, "copied": 0.0, "novel_valid": 0.0, "invalid": 0.0}
    return {"n": n, "copied": copied / n, "novel_valid": valid / n, "invalid": invalid / n}
