"""The grammar's knobs (`data.grammar`) and the built-in words they choose from, with the checks on their
ranges. Pure Python, so that the config is checked before anything heavy loads; the language itself (sampling,
parsing, classifying) is gptfit.data.grammar."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from gptfit.errors import UserError

NOUNS = """
    dog cat bird horse cow fox wolf bear lion tiger mouse rabbit frog snake owl duck goose goat pig
    donkey monkey camel zebra whale shark eagle crow spider beetle ant parrot turtle lizard squirrel
    kitten puppy pony lamb child man woman teacher farmer doctor king queen girl boy baby student
    painter sailor soldier pilot baker poet judge nurse uncle aunt friend neighbor stranger prince
    princess wizard witch giant thief hunter knight merchant priest singer dancer lawyer clerk tree
    hill river lake house garden bridge road tower castle village city forest field mountain stone
    box table chair window door lamp book letter key cup bottle basket ship boat car wagon bell clock
    candle mirror blanket pillow ladder fence wall gate barn cave island valley cloud star planet
    flower leaf apple cherry lemon bench shelf knife coin ring crown sword shield drum violin kettle
    jar bucket rope wheel feather shell pebble puddle meadow harbor palace library museum school
    church market tent hut cabin statue fountain pond cliff desert orchard
""".split()
PLURALS = {
    "wolf": "wolves",
    "mouse": "mice",
    "goose": "geese",
    "child": "children",
    "man": "men",
    "woman": "women",
    "thief": "thieves",
    "leaf": "leaves",
    "shelf": "shelves",
    "knife": "knives",
}
INTRANSITIVE = """
    sleep run walk sit stand laugh cry smile wait fall jump swim dance arrive rest shine glow vanish
    appear exist sneeze cough yawn shiver tremble wander roam rise sink float drift bark howl growl
    purr bloom fade melt freeze snore sigh weep kneel pause hesitate collapse recover retreat
    complain shout whisper scream sparkle flicker fly crawl hop limp stumble slip sway bounce spin
    blush giggle frown nod blink faint grin wink travel hurry relax squeak chirp sing hide
""".split()
TRANSITIVE = """
    chase see watch follow like love hate admire help visit find carry push pull hold touch greet
    fear trust call meet know ignore remember forget praise blame teach tease hug kick lift paint
    draw build guard feed wash catch bite hit kiss notice remind thank annoy amuse surprise scare
    frighten attack avoid recognize prefer protect rescue save observe study approach describe
    question obey serve join defend reach lead pass keep bring want need own sell buy cook eat
""".split()
ADJECTIVES = """
    old young big small tall short red blue green yellow white black brown grey happy sad angry calm
    quiet loud bright dark warm cold wet dry clean dirty heavy soft hard rich poor brave shy proud
    gentle clever silly lazy busy hungry sleepy curious famous strange ancient tiny huge round thin
    kind cruel wise wild tame fierce friendly lonely lucky noisy pretty ugly golden wooden narrow
    wide deep shallow fresh rotten sharp smooth rough bold strong weak slow quick polite honest
    nervous patient eager
""".split()
PREPOSITIONS = ["near", "behind", "under", "beside", "above", "with"]
# Determiners of either number, singular only, plural only ("a" would need "an"; "that" is the relativizer).
DET_ANY, DET_SG, DET_PL = ["the", "no", "my"], ["each", "every", "this", "one"], ["these", "those", "many", "several"]
NUMBERS = ("sg", "pl")


@dataclass
class GrammarSpec:
    # Which words are used (drawn from the built-in lists) and their frequency ranks.
    seed: int = 0
    # Each noun and verb has a singular and a plural form; verbs are half intransitive, half transitive.
    n_nouns: int = 60
    n_verbs: int = 60
    n_adjectives: int = 40
    # Relative clauses inside relative clauses, at most this deep (0: none at all).
    max_depth: int = 2
    # A noun phrase has an adjective / a prepositional phrase after its noun / a relative clause.
    p_adjective: float = 0.3
    p_pp: float = 0.2
    p_relative: float = 0.25
    # A verb phrase ends with a prepositional phrase ("sleeps near the tree").
    p_vp_pp: float = 0.2
    # A relative clause is an object relative ("that the cats chase"), else a subject relative ("that sleeps").
    p_object_relative: float = 0.4
    # A verb phrase's verb is transitive; a noun phrase is plural.
    p_transitive: float = 0.6
    p_plural: float = 0.4
    # Word frequencies within a word class fall as rank ** -zipf; 0 makes them uniform.
    zipf: float = 0.0


def spec_of(config: Any) -> GrammarSpec:
    """The spec of a `data.grammar` config node (its extra keys, such as `n_sentences`, left out)."""
    return GrammarSpec(**{f.name: getattr(config, f.name) for f in fields(GrammarSpec)})


def problems(spec: GrammarSpec) -> list[str]:
    """One line per knob out of range, each naming it as `data.grammar.<knob>`."""
    max_verbs = 2 * min(len(INTRANSITIVE), len(TRANSITIVE))
    bounds = [
        (name, 0 <= getattr(spec, name) <= 1, "in [0, 1]")
        for name in ("p_adjective", "p_relative", "p_vp_pp", "p_object_relative", "p_transitive", "p_plural")
    ]
    bounds += [
        ("p_pp", 0 <= spec.p_pp < 1, "in [0, 1) (at 1 noun phrases never end)"),
        ("n_nouns", 1 <= spec.n_nouns <= len(NOUNS), f"in [1, {len(NOUNS)}] (the built-in nouns)"),
        ("n_verbs", 2 <= spec.n_verbs <= max_verbs, f"in [2, {max_verbs}] (half intransitive, half transitive)"),
        (
            "n_adjectives",
            1 <= spec.n_adjectives <= len(ADJECTIVES),
            f"in [1, {len(ADJECTIVES)}] (the built-in adjectives)",
        ),
        ("max_depth", spec.max_depth >= 0, ">= 0"),
        ("zipf", spec.zipf >= 0, ">= 0"),
    ]
    return [f"data.grammar.{name}={getattr(spec, name)!r}: must be {allowed}" for name, ok, allowed in bounds if not ok]


def check(spec: GrammarSpec) -> None:
    """Raise UserError naming every knob out of range (one line)."""
    found = problems(spec)
    if found:
        raise UserError("; ".join(found))
