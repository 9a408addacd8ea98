"""The stylist: answers a customer's query from a small catalogue, following the rule lines it is given.

`answer(query, rules)` is the only entry point; `rules` maps a rule file to its lines ("- ...") for this user —
from the RuleBook for /chat, exactly as given for /replay. Two engines:

**Claude** (when an Anthropic client is given): the rule lines and the catalogue go into the system prompt, the
query is the user's message (the Messages API).

**Offline** (otherwise): keyword rules over the rule lines, nothing else. Each line "- [COND:] ACTION" is
read like this (case- and, for text typed without accents, accent-insensitively; phrases match whole words):

* ACTION "không gợi ý X" / "đừng gợi ý X" / "tránh gợi ý X" / "don't recommend X" → the products X names are
  left out, when COND holds (or there is no COND);
* ACTION "luôn ưu tiên X" / "ưu tiên X" / "gợi ý X" / "prefer X" → the products X names come first, when
  COND holds (a line whose COND holds ranks above a line without one, then the earlier line the higher:
  "Dưới 1m55: gợi ý đầm ngắn" beats "Gợi ý đầm maxi cho mọi khách" for "mình cao 1m50");
* "tối đa N sản phẩm" / "at most N products" anywhere in a line → at most N products (otherwise 5).

COND is the text before the first ":" (or after " khi " / " when " at the end of the action). It holds when
the query names one of its words ("trời nóng" → "nóng"; "Đi biển, dã ngoại" → "đi biển" or "dã ngoại"; filler
words such as "khi", "trời", "người" do not count), or when the query's temperature or height satisfies its
comparison: ">30°", "trên 30 độ", "dưới 1m55" against "35 độ", "1m50", "150cm". X may list alternatives
("áo khoác/dày", "chất liệu thoáng (cotton, linen), màu sáng"); a product is named by X when one of them
is, as whole words, in the product's name, kinds or terms (an out-of-stock product has the term "hết hàng").

The products are those of the kind the query asks for ("áo", "đầm", "váy", ...; every product when it names
none). Every other line is not interpreted offline. The answer names the rules that changed it: a line that
left a product out, put a product first or cut the list.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_PRODUCTS = 5


@dataclass(frozen=True)
class Product:
    name: str
    price: int  # VND
    sizes: tuple[str, ...]
    kinds: tuple[str, ...]  # what a customer calls it in a query
    terms: tuple[str, ...]  # what a rule may call it
    in_stock: bool = True

    @property
    def phrases(self) -> tuple[str, ...]:
        stock = "còn hàng" if self.in_stock else "hết hàng"
        return (self.name, *self.kinds, *self.terms, stock)

    def line(self) -> str:
        price = f"{self.price:,}".replace(",", ".")
        return f"• {self.name}: {price}đ, size {'/'.join(self.sizes)}"


CATALOGUE: tuple[Product, ...] = (
    Product(
        "Áo khoác nỉ lót lông",
        650_000,
        ("M", "L", "XL"),
        kinds=("áo", "áo khoác", "jacket", "coat"),
        terms=("áo khoác dày", "áo dày", "dày", "giữ ấm", "nỉ"),
    ),
    Product(
        "Áo thun cotton",
        199_000,
        ("S", "M", "L"),
        kinds=("áo", "áo thun", "t-shirt"),
        terms=("cotton", "chất liệu thoáng", "thoáng mát", "màu sáng"),
    ),
    Product(
        "Áo sơ mi linen",
        390_000,
        ("S", "M"),
        kinds=("áo", "áo sơ mi", "sơ mi", "shirt"),
        terms=("linen", "lanh", "chất liệu thoáng", "lịch sự", "công sở"),
    ),
    Product(
        "Áo len cổ lọ",
        350_000,
        ("M",),
        kinds=("áo", "áo len", "sweater"),
        terms=("áo dày", "dày", "giữ ấm", "len"),
        in_stock=False,
    ),
    Product(
        "Váy lanh",
        450_000,
        ("S", "M", "L"),
        kinds=("váy", "đầm", "dress"),
        terms=("linen", "lanh", "chất liệu thoáng", "màu sáng", "đầm ngắn"),
    ),
    Product(
        "Đầm maxi hoa",
        520_000,
        ("S", "M", "L"),
        kinds=("đầm", "váy", "dress"),
        terms=("đầm maxi", "maxi", "đầm dài"),
    ),
    Product(
        "Đầm midi công sở",
        480_000,
        ("S", "M"),
        kinds=("đầm", "váy", "dress"),
        terms=("đầm midi", "midi", "đầm ngắn", "knee-length", "lịch sự", "công sở"),
    ),
)


@dataclass
class Answer:
    text: str
    products: list[str] = field(default_factory=list)  # offline: what it recommends, in order
    rules_followed: list[str] = field(default_factory=list)  # offline: the lines that changed the answer
    engine: str = "offline"

    def as_json(self) -> dict[str, Any]:
        return {
            "answer": self.text,
            "products": self.products,
            "rules_followed": self.rules_followed,
            "engine": self.engine,
        }


# ---------------------------------------------------------------------- matching


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text).lower()


def _fold(text: str) -> str:
    """Without diacritics: "áo khoác dày" → "ao khoac day"."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _has_diacritics(text: str) -> bool:
    return _fold(text) != text


def contains(text: str, phrase: str) -> bool:
    """`phrase` in `text` as whole words, case-insensitively; accent-insensitively when either is typed
    without any accent."""
    text, phrase = _nfc(text), _nfc(phrase).strip()
    if not phrase:
        return False
    if not _has_diacritics(text) or not _has_diacritics(phrase):
        text, phrase = _fold(text), _fold(phrase)
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text) is not None


def _names(product: Product, alternatives: Sequence[str]) -> bool:
    return any(contains(phrase, alternative) for alternative in alternatives for phrase in product.phrases)


# ---------------------------------------------------------------------- reading rule lines

_EXCLUDE = re.compile(
    r"^(?:luôn\s+)?(?:không|đừng|tránh|không\s+được|don't|do\s+not|never)\s+(?:gợi ý|recommend)\s+(.+)$"
)
_PREFER = re.compile(r"^(?:luôn\s+|always\s+)?(?:ưu tiên|gợi ý|prefer|recommend)\s+(.+)$")
_LIMIT = re.compile(r"(?:tối đa|at most|max(?:imum)?)\s+(\d+)\s+(?:sản phẩm|products?|items?)")
_TRAILING_CONDITION = re.compile(r"^(.+?)\s+(?:khi|nếu|when|if)\s+(.+)$")

_CONDITION_FILLERS = ("khi", "nếu", "lúc", "trời", "thời tiết", "người", "khách", "khách hàng", "when", "if", "it is")
_X_LEADING_FILLERS = ("sản phẩm", "trang phục", "đồ", "đã", "các", "những", "một", "the", "a")
_X_TRAILING_FILLERS = (
    "cho mọi khách",
    "cho khách",
    "cho khách mời",
    "cho mọi người",
    "cho tất cả khách",
    "for everyone",
)

_TEMPERATURE = re.compile(r"(>=?|<=?|trên|dưới|hơn|above|over|below|under)\s*(\d{1,2})\s*(?:°\s*c?|độ(?:\s*c)?)")
_HEIGHT = re.compile(r"(>=?|<=?|trên|dưới|cao hơn|thấp hơn|above|over|below|under)\s*(?:1m(\d{1,2})|(\d{3})\s*cm)")
_QUERY_TEMPERATURE = re.compile(r"(\d{1,2})\s*(?:°|độ|do\b)")
_QUERY_HEIGHT = re.compile(r"(?<!\w)(?:1m(\d{1,2})|(\d{3})\s*cm)")


@dataclass(frozen=True)
class Condition:
    text: str
    words: tuple[str, ...]  # one of them in the query
    temperature: tuple[str, int] | None  # ("<" or ">", degrees)
    height: tuple[str, int] | None  # ("<" or ">", centimetres)

    def holds(self, query: str) -> bool:
        if any(contains(query, word) for word in self.words):
            return True
        if self.temperature is not None:
            values = [int(m.group(1)) for m in _QUERY_TEMPERATURE.finditer(_nfc(query))]
            if any(_compare(value, *self.temperature) for value in values):
                return True
        if self.height is not None:
            values = [_centimetres(m.group(1), m.group(2)) for m in _QUERY_HEIGHT.finditer(_nfc(query))]
            if any(_compare(value, *self.height) for value in values):
                return True
        return False


@dataclass(frozen=True)
class RuleLine:
    line: str
    kind: str  # exclude | prefer | other
    alternatives: tuple[str, ...] = ()  # X, split into its alternatives
    condition: Condition | None = None
    limit: int | None = None

    def applies(self, query: str) -> bool:
        return self.condition is None or self.condition.holds(query)


def _direction(word: str) -> str:
    return "<" if word in ("<", "<=", "dưới", "thấp hơn", "below", "under") else ">"


def _compare(value: int, direction: str, bound: int) -> bool:
    return value < bound if direction == "<" else value > bound


def _centimetres(metre_part: str | None, cm_part: str | None) -> int:
    if metre_part is not None:
        return 100 + int(metre_part.ljust(2, "0"))
    return int(cm_part or 0)


def _split_alternatives(text: str) -> list[str]:
    parts = re.split(r"\s*(?:/|,|;|\(|\)|\s+hoặc\s+|\s+và\s+|\s+or\s+|\s+and\s+)\s*", text)
    return [part.strip(" .!") for part in parts if part.strip(" .!")]


def _strip_fillers(text: str, leading: Sequence[str], trailing: Sequence[str] = ()) -> str:
    changed = True
    while changed:
        changed = False
        for filler in leading:
            if text == filler or text.startswith(filler + " "):
                text, changed = text[len(filler) :].strip(), True
        for filler in trailing:
            if text == filler or text.endswith(" " + filler):
                text, changed = text[: -len(filler)].strip(), True
    return text


def parse_condition(text: str) -> Condition:
    text = _nfc(text)
    temperature = height = None
    if match := _TEMPERATURE.search(text):
        temperature = (_direction(match.group(1)), int(match.group(2)))
        text = text[: match.start()] + " " + text[match.end() :]
    if match := _HEIGHT.search(text):
        height = (_direction(match.group(1)), _centimetres(match.group(2), match.group(3)))
        text = text[: match.start()] + " " + text[match.end() :]
    words = []
    for part in _split_alternatives(text):
        word = _strip_fillers(part, _CONDITION_FILLERS)
        if word:
            words.append(word)
    return Condition(text, tuple(words), temperature, height)


def parse_rule(line: str) -> RuleLine:
    """One rule line as the offline stylist reads it (see the module's docstring)."""
    text = _nfc(line).strip()
    text = text[2:].strip() if text.startswith("- ") else text.lstrip("-").strip()
    limit_match = _LIMIT.search(text)
    limit = int(limit_match.group(1)) if limit_match else None
    condition = None
    head, colon, action = text.partition(":")
    if colon and action.strip() and len(head) <= 80:
        condition, text = parse_condition(head), action.strip()
    for kind, pattern in (("exclude", _EXCLUDE), ("prefer", _PREFER)):
        match = pattern.match(text)
        if not match:
            continue
        target = match.group(1)
        if condition is None and (trailing := _TRAILING_CONDITION.match(target)):
            target, condition = trailing.group(1), parse_condition(trailing.group(2))
        alternatives = tuple(
            alternative
            for part in _split_alternatives(target)
            if (alternative := _strip_fillers(part, _X_LEADING_FILLERS, _X_TRAILING_FILLERS))
        )
        if kind == "prefer" and limit is not None:
            alternatives = ()  # "gợi ý tối đa 3 sản phẩm ..." is a limit, not a product
        return RuleLine(line, kind, alternatives, condition, limit)
    return RuleLine(line, "other", (), condition, limit)


# ---------------------------------------------------------------------- answering


def _kinds_asked(query: str) -> list[Product]:
    asked = [p for p in CATALOGUE if any(contains(query, kind) for kind in p.kinds)]
    return asked or list(CATALOGUE)


def offline_answer(query: str, rules: Mapping[str, Sequence[str]]) -> Answer:
    """The catalogue's answer to `query`, following `rules` as the module's docstring says."""
    parsed = [parse_rule(line) for lines in rules.values() for line in lines]
    candidates = _kinds_asked(query)
    followed: list[str] = []

    def follow(line: str) -> None:
        if line not in followed:
            followed.append(line)

    for rule in parsed:
        if rule.kind == "exclude" and rule.alternatives and rule.applies(query):
            kept = [p for p in candidates if not _names(p, rule.alternatives)]
            if len(kept) < len(candidates):
                follow(rule.line)
            candidates = kept

    preferences = [r for r in parsed if r.kind == "prefer" and r.alternatives and r.applies(query)]
    preferences.sort(key=lambda r: r.condition is None)  # stable: the conditional ones first, in file order

    def rank(product: Product) -> int:
        return next((i for i, r in enumerate(preferences) if _names(product, r.alternatives)), len(preferences))

    candidates = sorted(candidates, key=rank)  # stable: catalogue order among equals

    limits = [r for r in parsed if r.limit is not None and r.applies(query)]
    limit = min((r.limit for r in limits if r.limit is not None), default=DEFAULT_MAX_PRODUCTS)
    shown = candidates[: max(limit, 1)]
    for preference in preferences:
        if any(_names(p, preference.alternatives) for p in shown):
            follow(preference.line)
    if len(shown) < len(candidates) and limits:
        follow(next(r.line for r in limits if r.limit == limit))
    followed.sort(key=lambda line: next(i for i, r in enumerate(parsed) if r.line == line))

    if shown:
        text = "Mình gợi ý cho bạn:\n" + "\n".join(p.line() for p in shown)
    else:
        text = "Mình chưa tìm được sản phẩm phù hợp trong danh mục, bạn mô tả thêm nhu cầu giúp mình nhé?"
    if followed:
        text += "\nQuy tắc mình đã theo: " + "; ".join(f"«{line.removeprefix('- ')}»" for line in followed)
    return Answer(text, [p.name for p in shown], followed)


# ---------------------------------------------------------------------- Claude

PERSONA = (
    "Bạn là stylist thời trang của cửa hàng, trò chuyện với khách bằng tiếng Việt. "
    "Chỉ gợi ý sản phẩm có trong danh mục dưới đây, và tuân thủ mọi quy tắc được đưa ra."
)


def system_prompt(rules: Mapping[str, Sequence[str]]) -> str:
    """What Claude is told: the persona, each rule file's lines for this user, and the catalogue."""
    parts = [PERSONA]
    for module_name, lines in rules.items():
        if lines:
            parts.append(f"<rules file={module_name!r}>\n" + "\n".join(lines) + "\n</rules>")
    catalogue = "\n".join(p.line() + ("" if p.in_stock else " (hết hàng)") for p in CATALOGUE)
    parts.append(f"<catalogue>\n{catalogue}\n</catalogue>")
    return "\n\n".join(parts)


def claude_answer(query: str, rules: Mapping[str, Sequence[str]], *, client: Any, model: str) -> Answer:
    response = client.messages.create(
        model=model,
        max_tokens=1024,
        system=system_prompt(rules),
        messages=[{"role": "user", "content": query}],
    )
    text = "".join(block.text for block in response.content if getattr(block, "type", None) == "text").strip()
    return Answer(text, engine="claude")


def answer(query: str, rules: Mapping[str, Sequence[str]], *, claude: Any | None = None, model: str = "") -> Answer:
    """Claude's answer when a client is given, the offline one otherwise (see the module's docstring)."""
    if claude is not None:
        return claude_answer(query, rules, client=claude, model=model)
    return offline_answer(query, rules)
