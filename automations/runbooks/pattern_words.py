"""A runbook parameter's allowedPattern in plain words, for the people who fill in the form.

Only the shapes runbooks mostly use are put into words: literal text, character classes of
ranges and single characters, \\d, and counts, joined by top-level alternatives. Anything else
(groups, negated classes, lookaround, backreferences) gives None, and callers fall back to
generic words: a wrong sentence about a rule is worse than none. The regex itself is shown
only on demand (the form's "Exact rule" disclosure, the API's schema).
"""
from __future__ import annotations

import re

MAX_WORDS = 240  # a longer sentence helps nobody; the generic words apply
_COUNT = re.compile(r"\{(\d+)(,(\d*))?\}")
_NAMED_RANGES = {("a", "z"): "a–z", ("A", "Z"): "A–Z", ("0", "9"): "0–9"}
_ESCAPED_LITERAL = set(".-/_:@\\+*?()[]{}|^$ ")


class _Unsupported(Exception):
    pass


def describe(pattern: str) -> str | None:
    """The pattern as a phrase that completes "Enter …", or None when it cannot be said simply."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > 400:
        return None
    try:
        alternatives = [_sequence(part) for part in _split_top_level(pattern)]
    except _Unsupported:
        return None
    words = ", or ".join(alternatives) if len(alternatives) > 1 else alternatives[0]
    return words if len(words) <= MAX_WORDS else None


def _split_top_level(pattern: str) -> list[str]:
    parts, depth, current, i = [], 0, "", 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            current += pattern[i:i + 2]
            i += 2
            continue
        if char == "[":
            depth += 1
        elif char == "]" and depth:
            depth -= 1
        if char == "|" and not depth:
            parts.append(current)
            current = ""
        else:
            current += char
        i += 1
    return parts + [current]


def _sequence(part: str) -> str:
    part = part[1:] if part.startswith("^") else part
    part = part[:-1] if part.endswith("$") and not part.endswith("\\$") else part
    if not part:
        return "nothing"
    pieces: list[str] = []
    literal = ""
    i = 0
    while i < len(part):
        atom, i = _atom(part, i)
        count, i = _quantifier(part, i)
        if atom[0] == "literal" and count == (1, 1):
            literal += atom[1]
            continue
        if literal:
            pieces.append(f"“{literal}”")
            literal = ""
        pieces.append(_counted(atom, count))
    if literal:
        pieces.append(f"“{literal}”")
    return ", then ".join(pieces)


def _atom(part: str, i: int) -> tuple[tuple[str, str], int]:
    char = part[i]
    if char == "\\":
        if i + 1 >= len(part):
            raise _Unsupported
        escaped = part[i + 1]
        if escaped == "d":
            return ("digit", ""), i + 2
        if escaped in _ESCAPED_LITERAL:
            return ("literal", escaped), i + 2
        raise _Unsupported  # \w, \s, \b, backreferences: not said simply enough
    if char == "[":
        end = part.find("]", i + 2)
        if end < 0:
            raise _Unsupported
        return ("class", _class_words(part[i + 1:end])), end + 1
    if char == ".":
        return ("any", ""), i + 1
    if char in "()|^$*+?{}":
        raise _Unsupported
    return ("literal", char), i + 1


def _class_words(body: str) -> str:
    if not body or body.startswith("^"):
        raise _Unsupported
    items: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            if i + 1 >= len(body):
                raise _Unsupported
            escaped = body[i + 1]
            if escaped == "d":
                items.append("0–9")
            elif escaped in _ESCAPED_LITERAL:
                items.append(f"“{escaped}”")
            else:
                raise _Unsupported
            i += 2
            continue
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = char, body[i + 2]
            items.append(_NAMED_RANGES.get((low, high), f"{low}–{high}"))
            i += 3
            continue
        items.append(f"“{char}”")
        i += 1
    unique = list(dict.fromkeys(items))
    return unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " or " + unique[-1]


def _quantifier(part: str, i: int) -> tuple[tuple[int, int | None], int]:
    if i >= len(part):
        return (1, 1), i
    char = part[i]
    if char == "*":
        return (0, None), i + 1
    if char == "+":
        return (1, None), i + 1
    if char == "?":
        return (0, 1), i + 1
    if char == "{":
        match = _COUNT.match(part, i)
        if not match:
            raise _Unsupported
        low = int(match.group(1))
        high = low if match.group(2) is None else (int(match.group(3)) if match.group(3) else None)
        return (low, high), match.end()
    return (1, 1), i


def _counted(atom: tuple[str, str], count: tuple[int, int | None]) -> str:
    kind, text = atom
    low, high = count
    if kind == "literal":
        thing_one, things = f"“{text}”", f"“{text}”"
    elif kind == "digit":
        thing_one, things = "one digit", "digits"
    elif kind == "any":
        thing_one, things = "one character", "characters"
    else:
        thing_one, things = f"one character from {text}", f"characters from {text}"
    if (low, high) == (1, 1):
        return thing_one
    if (low, high) == (0, None):
        return f"any number of {things}"
    if (low, high) == (1, None):
        return f"one or more {things}"
    if (low, high) == (0, 1):
        return f"optionally {thing_one}"
    if high is None:
        return f"at least {low} {things}"
    if low == high:
        return f"{low} {things}"
    return f"{low} to {high} {things}"
