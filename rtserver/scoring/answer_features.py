"""What a trained interviewer looks for in an answer, read from its words alone.

Structured-interview raters (behaviourally anchored rating scales) reward an answer that
tells what happened: the situation, the task, what the candidate did and how it came out
(STAR), with specifics. Each feature here is one such cue, found by plain word patterns in
the transcript, sentence by sentence, so that each can be quoted as evidence:

- **situation**: a time, place or circumstance ("last year", "at my previous job", "we had
  a customer who");
- **task**: what was asked of the candidate or at stake ("I was responsible for", "the
  goal was", "I needed to");
- **action**: something the candidate did, first person and past tense ("I rebuilt", "we
  called", "I decided to");
- **result**: how it ended ("as a result", "which cut", "by 30 percent", "in the end");
- **specificity**: numbers, named tools and products (the job's skills, capitalised
  names), and first-person actions;
- **outcome**: a result stated with a figure or a change ("reduced", "grew", "on time");
- **skills**: the job's skills named, with common aliases ("Postgres" is PostgreSQL), and
  used in a sentence that says what was done with them;
- **buzzwords**: sentences that are lists of names with no verb, and stock phrases with no
  content ("team player", "passionate about", "think outside the box"): what keyword
  stuffing and vague answers are made of.

Patterns are English, lower-cased, and deliberately simple: the features are not the
score, they are what the rating in ``competencies.py`` weighs beside how close the answer
is, in meaning, to the question and to each anchor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Sentences end at . ! or ? followed by a space and a capital or a digit, or at the end.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")
_WORD = re.compile(r"[a-z0-9][a-z0-9'+#./-]*")

SITUATION = re.compile(
    r"\b(last (year|month|week|quarter|summer|winter|spring|autumn)|(a|two|three|few|couple of)"
    r" (years|months|weeks) ago|at my (last|previous|old|current|first) (job|company|role|"
    r"employer|store|team)|in my (last|previous|current|first) (job|role|position)|when i was|"
    r"once,? (a|we|i|our)|one (time|day|morning|evening|night|weekend)|there was a|we had a|"
    r"i had a|our (team|store|company|shop|client|customer) (had|was)|during (the|a|my|our)|"
    r"i used to (work|do|run|manage|be)|(a|one|this) (customer|client|gentleman|lady|man|woman|"
    r"guy|colleague|driver|member of staff|user|caller) (came|called|rang|phoned|emailed|had|"
    r"was|wrote|complained)|"
    r"back (in|when)|in (19|20)\d\d|on a (monday|tuesday|wednesday|thursday|friday|saturday|"
    r"sunday))\b"
)
TASK = re.compile(
    r"\b(i was (responsible|in charge|asked|tasked|supposed|expected|hired)|my (job|role|task|"
    r"goal|responsibility) was|the (goal|task|problem|challenge|issue|aim|target) was|i (had|"
    r"needed|wanted) to|we (had|needed) to|it was (my|up to me)|i had to make sure|"
    r"the deadline)\b"
)
# Past tenses that do not end in -ed.
IRREGULAR_PAST = (  # noqa: SIM905 (a list of words reads best as words)
    "built made led wrote ran set found took gave told sent put got did spoke chose "
    "drove began brought bought caught taught thought sold held kept met paid said saw "
    "won cut went came rang called fixed sat stood moved opened shut split rewrote "
    "rebuilt redid hired fired trained showed knew understood dealt felt left lent sped "
    "spent struck swapped tore threw wore broke dug drew fed fought flew hung hid hit "
    "laid lost meant read rode rose sang sank shot slept sought stole swept swung"
).split()
# A first-person subject, then up to one adverb, then a past-tense verb.
ACTION = re.compile(
    r"\b(i|we)\s+(?:then\s+|also\s+|quickly\s+|finally\s+|first\s+|just\s+|personally\s+)?"
    r"(\w+ed|" + "|".join(IRREGULAR_PAST) + r")\b"
)
# What the candidate would do: a situational question ("what would you do if") asks for it.
PLAN = re.compile(r"\b(i would|i'd|i will|i'll|i'm going to|my first step would be)\s+\w+")
RESULT = re.compile(
    r"\b(as a result|the result was|in the end|in the end,|which (meant|cut|reduced|saved|"
    r"brought|raised|increased|dropped|halved|doubled|led)|so now|ended up|"
    r"resulted|afterwards|after that|since then|from then on|by the end|that (cut|reduced|"
    r"saved|fixed|solved|brought)|it worked|we (hit|met|beat|reached|made) (the|our)|"
    r"(went|dropped|fell|rose|grew|came) (down|up|from|to)|on time|under budget|"
    r"got (a|an|the) (promotion|award|bonus|thank)|thanked (me|us)|went away|never happened "
    r"again|(was|were|got) (fixed|resolved|solved|sorted)|(it|that|this) (worked|helped)|"
    r"left (us|me) a|(five|5)[- ]star|(emailed|wrote|called|rang) (me|us)( back)? to say|"
    r"came back|(works|working) now|now (works|runs|takes)|still (gets|get) used)\b"
)
CHANGE = re.compile(
    r"\b(reduc\w*|increas\w*|improv\w*|cut|saved?|grew|grow\w*|halved|doubled|tripled|"
    r"dropped|raised|lowered|shortened|sped up|faster|slower|fewer|more|less|higher|lower|"
    r"percent|%|per cent)\b"
)
NUMBER = re.compile(
    r"\b(\d[\d,.]*%?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|"
    r"twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|million|"
    r"half|double|dozen|percent)\b"
)
BUZZWORDS = re.compile(
    r"\b(team player|passionate|synerg\w*|think outside the box|go-getter|self-starter|"
    r"results-driven|detail-oriented|hard worker|hard-working|best practices?|"
    r"leverag\w*|dynamic|proactive|value-add|win-win|cutting-edge|world-class|"
    r"customer-centric|always give (my|one's) best|110 percent|people person|"
    r"i (always|really|truly) (believe|think|try|care)|in general|generally speaking|"
    r"at the end of the day|it depends)\b"
)
# A verb of any kind: a sentence without one is a list of names, not a statement.
VERB = re.compile(
    r"\b(is|was|were|are|am|be|been|had|have|has|do|did|does|made|make|went|go|"
    r"\w+ed|\w+ing|" + "|".join(IRREGULAR_PAST) + r"|will|would|can|could|should)\b"
)

# Common names for the same skill, lower case: a job lists one, the candidate says another.
ALIASES: dict[str, tuple[str, ...]] = {
    "postgresql": ("postgres", "postgresql", "psql"),
    "javascript": ("javascript", "js"),
    "typescript": ("typescript", "ts"),
    "kubernetes": ("kubernetes", "k8s"),
    "python": ("python", "py"),
    "amazon web services": ("amazon web services", "aws"),
    "google cloud": ("google cloud", "gcp"),
    "microsoft excel": ("microsoft excel", "excel", "spreadsheets", "spreadsheet"),
    "excel": ("excel", "spreadsheets", "spreadsheet"),
    "continuous integration": ("continuous integration", "ci", "ci/cd"),
    "customer relationship management": ("customer relationship management", "crm"),
    "point of sale": ("point of sale", "pos", "till", "tills"),
    "key performance indicators": ("key performance indicators", "kpi", "kpis"),
    "structured query language": ("structured query language", "sql"),
}


@dataclass(frozen=True)
class SentenceCues:
    """What one sentence shows."""

    text: str  # verbatim, as the transcript has it
    situation: bool
    task: bool
    action: bool
    plan: bool  # an action the candidate would take ("I would call", "I'd check")
    result: bool
    numbers: int
    names: int  # capitalised names inside the sentence and skills named
    skills: tuple[str, ...]  # the job's skills it names (the job's spelling)
    change: bool  # a word of change (reduced, grew, faster, percent)
    buzzwords: int
    has_verb: bool
    words: int


@dataclass(frozen=True)
class AnswerCues:
    """The cues of a whole answer, each a 0-1 strength, and its sentences'."""

    sentences: tuple[SentenceCues, ...]
    words: int
    structure: float  # share of situation, task, action, result present (0, .25 ... 1)
    specificity: float  # numbers, names and actions, saturating
    outcome: float  # 1: a result with a figure or a change; .5: a result alone
    skills: tuple[str, ...]  # the job's skills named in a sentence that has a verb
    listed_skills: tuple[str, ...]  # the job's skills named only in verbless lists
    substance: float  # share of the answer's words in sentences with a verb and no buzzword
    buzz: float  # buzzwords per sentence, saturating at 1


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, verbatim (stripped), in order; [] for blank text."""
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def skill_patterns(skills: Iterable[str]) -> dict[str, re.Pattern[str]]:
    """For each skill (as the job spells it), a pattern of its name and its aliases."""
    patterns = {}
    for skill in skills:
        names = {skill.lower(), *ALIASES.get(skill.lower(), ())}
        alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        patterns[skill] = re.compile(rf"(?<![\w+#]){alternatives}(?![\w+#])")
    return patterns


def sentence_cues(text: str, skills: dict[str, re.Pattern[str]]) -> SentenceCues:
    lower = text.lower()
    named = tuple(skill for skill, pattern in skills.items() if pattern.search(lower))
    # Capitalised words past the first: names of tools, products, places, people.
    capitals = re.findall(r"(?<=\s)[A-Z][A-Za-z0-9+#.-]+", text)
    proper = [w for w in capitals if w not in ("I", "I'm", "I've", "I'd", "I'll", "OK")]
    return SentenceCues(
        text=text,
        situation=bool(SITUATION.search(lower)),
        task=bool(TASK.search(lower)),
        action=bool(ACTION.search(lower)),
        plan=bool(PLAN.search(lower)),
        result=bool(RESULT.search(lower)),
        numbers=len(NUMBER.findall(lower)),
        names=len(proper) + len(named),
        skills=named,
        change=bool(CHANGE.search(lower)),
        buzzwords=len(BUZZWORDS.findall(lower)),
        has_verb=bool(VERB.search(lower)),
        words=len(_WORD.findall(lower)),
    )


def answer_cues(text: str, skills: Sequence[str] = ()) -> AnswerCues:
    """The cues of an answer (a transcript's text) against the job's ``skills``."""
    patterns = skill_patterns(skills)
    sentences = tuple(sentence_cues(s, patterns) for s in split_sentences(text))
    words = sum(s.words for s in sentences)
    if not sentences or words == 0:
        return AnswerCues(sentences, 0, 0.0, 0.0, 0.0, (), (), 0.0, 0.0)
    acted = any(s.action for s in sentences)
    planned = any(s.plan for s in sentences)
    parts = [
        float(any(s.situation for s in sentences)),
        float(any(s.task for s in sentences)),
        1.0 if acted else 0.5 if planned else 0.0,  # a plan is half of a deed
        float(any(s.result for s in sentences)),
    ]
    actions = sum(s.action for s in sentences) + sum(s.plan for s in sentences) / 2
    # Figures and names count in statements only: a list of names is not a specific.
    stated = [s for s in sentences if s.has_verb and not _is_list(s)]
    figures = sum(min(s.numbers, 2) for s in stated)
    names = sum(min(s.names, 2) for s in stated)
    specificity = min(1.0, (min(actions, 3) + min(figures, 3) + min(names, 3)) / 6.0)
    result = [s for s in sentences if s.result]
    if any(s.numbers or s.change for s in result):
        outcome = 1.0
    elif result or any(s.change and s.numbers and s.action for s in sentences):
        outcome = 0.5
    else:
        outcome = 0.0
    used = _unique(skill for s in sentences if s.has_verb and not _is_list(s) for skill in s.skills)
    listed = _unique(skill for s in sentences for skill in s.skills if skill not in used)
    content = sum(s.words for s in sentences if s.has_verb and not s.buzzwords and not _is_list(s))
    buzz = min(1.0, sum(s.buzzwords for s in sentences) / len(sentences))
    return AnswerCues(
        sentences=sentences,
        words=words,
        structure=sum(parts) / 4.0,
        specificity=specificity,
        outcome=outcome,
        skills=used,
        listed_skills=listed,
        substance=content / words,
        buzz=buzz,
    )


def _is_list(s: SentenceCues) -> bool:
    """A sentence that is mostly a list of names ("Python, Docker, Kubernetes, agile")."""
    commas = s.text.count(",")
    return commas >= 3 and commas >= s.words / 4


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
