"""Chat text → quiz settings (``app.messages.parse_message``): keywords match as words, in English and Korean.

Each case is a message and the ``Intent`` a user should get from it. Most of them held before keywords were
matched as words and must keep holding; the rest did not (a keyword was found inside another word:
``"presets"`` reset the session, ``"이과학생"`` asked for science; an English word with a particle,
``"math를"``, was missed)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.messages import Intent, parse_message
from quiz.vocabulary import Language

EN: Language | None = None  # an English message says no language: the session's, else en
KO: Language = "ko"

CASES: list[tuple[str | None, Intent]] = [
    # English: whole words, case-insensitive
    ("hard history please", Intent("history", "hard", EN)),
    ("give me a hard history question", Intent("history", "hard", EN)),
    ("an easy science question please", Intent("science", "easy", EN)),
    ("Medium MATH", Intent("math", "medium", EN)),
    ("python, difficult", Intent("programming", "hard", EN)),
    ("barcode", Intent()),
    ("reset", Intent(reset=True)),
    ("Reset, then math", Intent("math", language=EN, reset=True)),
    ("restart please", Intent(reset=True)),
    ("let's start over with geography", Intent("geography", reset=True)),
    ("start   over", Intent(reset=True)),
    ("next", Intent()),
    ("", Intent()),
    (None, Intent()),
    # English: a keyword inside another word is not the keyword
    ("presets", Intent()),
    ("show me the presets for hard math", Intent("math", "hard")),
    ("I restarted my laptop, now some maths", Intent("math")),
    ("resetting", Intent()),
    ("hardware", Intent()),
    ("mathematician trivia", Intent("general")),
    ("uneasy about codes", Intent()),
    # English words with Korean particles attached
    ("python으로 코딩 문제", Intent("programming", language=KO)),
    ("math를 어렵게", Intent("math", "hard", KO)),
    # Korean: a keyword at the start of a word, particles and endings after it
    ("보통 난이도로 수학 문제 풀래", Intent("math", "medium", KO)),
    ("쉬운 과학 문제", Intent("science", "easy", KO)),
    ("수학을 어렵게 내줘", Intent("math", "hard", KO)),
    ("역사는 쉬운 걸로", Intent("history", "easy", KO)),
    ("한국사", Intent("history", language=KO)),
    ("영어로 된 문제", Intent("english", language=KO)),
    ("초기화", Intent(language=KO, reset=True)),
    ("초기화해줘", Intent(language=KO, reset=True)),
    ("처음부터 다시, 지리 문제", Intent("geography", language=KO, reset=True)),
    ("맨 처음부터", Intent(language=KO, reset=True)),
    ("다음", Intent(language=KO)),
    # Korean: a keyword inside another word is not the keyword
    ("이과학생인데 영어 문제", Intent("english", language=KO)),  # 이과 학생: not 과학
    ("대화학습", Intent(language=KO)),  # not 화학
    ("비상식적인 문제", Intent(language=KO)),  # not 상식
    ("재초기화", Intent(language=KO)),  # conservative: a reset only where the word starts with it
    ("고등수학", Intent(language=KO)),  # a compound that ends with a keyword: documented limitation
    ("수학여행", Intent("math", language=KO)),  # one that starts with it (a school trip): documented limitation
]


@pytest.mark.parametrize(("message", "intent"), CASES, ids=[repr(m) for m, _ in CASES])
def test_keywords_match_as_words(message: str | None, intent: Intent) -> None:
    assert parse_message(message) == intent


def ask(client: TestClient, **body: object):
    r = client.post("/ask", json=body)
    assert r.status_code == 200, r.text
    return r


def test_a_message_that_says_presets_does_not_reset_the_session(client: TestClient) -> None:
    first = ask(client, subject="english", difficulty="easy").json()
    second = ask(client, session_id=first["session_id"], message="show me the presets").json()
    assert (second["session_id"], second["round"]) == (first["session_id"], 2)
    third = ask(client, session_id=first["session_id"], message="초기화해줘").json()
    assert (third["session_id"], third["round"]) == (first["session_id"], 1)
