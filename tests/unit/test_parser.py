"""The stream parser: sentence rule, markers, malformed tags, and split-invariance."""

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.stream_parser import ChunkPolicy, ParsedChunk, ParsedMarker, ParseError, StreamParser


def parse(tokens: list[str], policy: ChunkPolicy = ChunkPolicy()) -> list:
    parser = StreamParser(max_chunk_chars=120, policy=policy)
    out = []
    for t in tokens:
        out += parser.feed(t)
    out += parser.end()
    return out


def chunks(events):
    return [(e.text, e.boundary, e.final, e.marker_count) for e in events if isinstance(e, ParsedChunk)]


def markers(events):
    return [(e.sequence_id, e.command, e.value, e.offset) for e in events if isinstance(e, ParsedMarker)]


def test_sentence_rule_keeps_numbers_abbreviations_and_titles_together():
    text = "Pi is 3.14 today. Ask Dr. Smith, e.g. about U.S. law! Really? Yes\nNext line"
    assert [c[0] for c in chunks(parse([text]))] == [
        "Pi is 3.14 today.", " Ask Dr. Smith, e.g. about U.S. law!", " Really?", " Yes\n", "Next line"]


def test_markers_are_stripped_and_emitted_at_their_character_position():
    events = parse(["Hello <v:expression:smile>there. <v:pose_yaw:-5>Bye."])
    assert chunks(events) == [("Hello there.", ".", False, 1), (" Bye.", ".", False, 1), ("", "end", True, 0)]
    assert markers(events) == [(0, "expression", "smile", 6), (1, "pose_yaw", "-5", 1)]


def test_marker_is_emitted_the_moment_its_tag_closes():
    parser = StreamParser()
    assert parser.feed("Hi <v:expr") == []
    out = parser.feed("ession:smile> and")
    assert [type(e) for e in out] == [ParsedMarker]  # no chunk yet: the sentence is still open


def test_malformed_and_unclosed_tags_never_stall_and_are_never_spoken():
    events = parse(["One <v:bad tag> two. Three <v:x:y zz. Four <v:open"])
    errors = [e.code for e in events if isinstance(e, ParseError)]
    assert errors == ["malformed_marker", "malformed_marker", "unclosed_marker"]
    assert [c[0] for c in chunks(events)] == ["One  two.", " Three  zz.", " Four "]
    assert markers(events) == []


def test_a_literal_less_than_is_text():
    assert chunks(parse(["3 < 5 and <b>bold</b>."]))[0][0] == "3 < 5 and <b>bold</b>."


def test_punctuation_only_fragments_join_the_next_chunk():
    assert [c[0] for c in chunks(parse(["Wait... really?"]))] == ["Wait.", ".. really?", ""]


def test_long_text_without_punctuation_is_split_at_a_space():
    parser = StreamParser(max_chunk_chars=40)
    events = parser.feed("word " * 30)
    texts = [e.text for e in events if isinstance(e, ParsedChunk)]
    assert texts and all(len(t) <= 40 and t.endswith(" ") for t in texts)


def test_clause_first_cuts_only_the_first_chunk_of_a_turn():
    text = "Hello there, it is good to see you, really. And then, later, more."
    first = [c[0] for c in chunks(parse([text], ChunkPolicy(clause_first=True)))]
    assert first == ["Hello there,", " it is good to see you, really.", " And then, later, more.", ""]
    again = parse(["Hi, you. ", "Yes, it is."], ChunkPolicy(clause_first=True, min_words=1))
    assert [c[0] for c in chunks(again)][:2] == ["Hi,", " you."]


def test_a_token_target_cuts_long_chunks_at_clauses():
    tokens = "One two three, four five six, seven eight. Nine, ten.".replace(" ", " |").split("|")
    cut = [c[0] for c in chunks(parse(tokens, ChunkPolicy(target_tokens=3)))]
    assert cut[:3] == ["One two three,", " four five six,", " seven eight."]


def test_end_always_closes_with_a_final_chunk():
    assert chunks(parse(["Done."])) == [("Done.", ".", False, 0), ("", "end", True, 0)]
    assert chunks(parse(["no period"])) == [("no period", "end", True, 0)]


WORDS = st.sampled_from(["Hello", "there", "Dr.", "Smith", "3.14", "e.g.", "is", "fine", "ok", "U.S.", "well,", ";", "—",
                         "<v:expression:smile>", "<v:pose_yaw:-5>", "<v:bad tag>", "<v:open", "<", "...", "?", "!",
                         "\n", ".", ",", "café", "naïve"])


@settings(max_examples=300, deadline=None)
@given(words=st.lists(WORDS, min_size=1, max_size=30), data=st.data(), clause_first=st.booleans())
def test_any_token_split_gives_the_same_chunks_and_markers(words, data, clause_first):
    text = " ".join(words)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=25))))
    bounds = [0, *cuts, len(text)]
    tokens = [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    policy = ChunkPolicy(clause_first=clause_first)  # the first-fragment rule counts words, not tokens
    whole, split = parse([text], policy), parse(tokens, policy)
    assert chunks(split) == chunks(whole)
    assert markers(split) == markers(whole)
    assert [e.code for e in split if isinstance(e, ParseError)] == [e.code for e in whole if isinstance(e, ParseError)]
