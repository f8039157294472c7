"""Seeded corpus of (gold, response) pairs for the math verifier: every gold form a dataset uses, against responses
that box an equivalent answer, a near miss, or a plainly wrong one.

Pair `i` depends only on (seed, i), so any subset of indices (the CI sample) is exactly that part of the full corpus.
Labels (`kind`) say what the generator meant; agreement is measured against Math-Verify, not against the labels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import comb, gcd
from typing import Callable

KINDS = ("equivalent", "near_miss", "wrong")
_KIND_WEIGHTS = (5, 3, 2)


@dataclass(frozen=True)
class Form:
    """One gold answer and what a response may box for it."""

    gold: str  # the answer itself, before a dataset wraps it in $...$ or \boxed{}
    equivalent: tuple[str, ...]  # the same value in other notations
    near_miss: tuple[str, ...]  # one step off: a sign, a digit, a bracket, a missing root


@dataclass(frozen=True)
class MathPair:
    index: int
    category: str  # the gold form, a key of FORMS
    wrapper: str  # how the dataset row wraps the gold, a key of GOLD_WRAPPERS
    kind: str  # one of KINDS: what the boxed answer was generated to be
    gold: str  # the ground truth exactly as the dataset row holds it
    answer: str  # the exact content of the response's last \boxed{} (what a reference verifier is handed)
    response: str  # the whole response the reward service scores


def _frac(p: int, q: int) -> str:
    return f"\\frac{{{p}}}{{{q}}}"


def _signed_frac(value: Fraction) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}{_frac(abs(value.numerator), value.denominator)}"


def _exact(value: Fraction) -> str:
    """A terminating fraction written out as a decimal, every digit kept."""
    text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _terminating(value: Fraction) -> str | None:
    q = value.denominator
    while q % 2 == 0:
        q //= 2
    while q % 5 == 0:
        q //= 5
    return None if q != 1 else _exact(value)


def _reduced(rng: random.Random, max_q: int = 20) -> tuple[int, int]:
    while True:
        p, q = rng.randint(1, 3 * max_q), rng.randint(2, max_q)
        if gcd(p, q) == 1:
            return p, q


def integer(rng: random.Random) -> Form:
    n = rng.choice([rng.randint(0, 99), rng.randint(100, 999), -rng.randint(1, 500)])
    gold = rng.choice([str(n), f"{n}", f"{n}."]) if n >= 0 else str(n)
    near = (str(n + 1), str(n - 1), str(-n) if n else "1", str(10 * n + 1))
    return Form(gold.rstrip("."), (str(n), f"{n}.0", f"{n}.00", f"\\text{{{n}}}"), near)


def thousands(rng: random.Random) -> Form:
    n = rng.randint(1_000, 9_999_999) * rng.choice([1, 1, 1, -1])
    commas = f"{n:,}"
    gold = rng.choice([commas, commas.replace(",", "{,}"), commas.replace(",", ",\\!"), commas.replace(",", "\\,")])
    near = (f"{n + 1:,}", str(n - 10), f"{abs(n) // 1000}" if n > 0 else str(n // 1000), str(-n))
    return Form(gold, (str(n), commas, commas.replace(",", "{,}")), near)


def decimal(rng: random.Random) -> Form:
    value = Fraction(rng.randint(1, 99_999), rng.choice([10, 100, 1000, 4, 8])) * rng.choice([1, 1, -1])
    text = _exact(value)
    gold = text.replace("0.", ".", 1) if text.startswith("0.") and rng.random() < 0.3 else text
    eq = (text, f"{float(value):.4f}", _signed_frac(value))
    near = (_exact(value + Fraction(1, 100)), _exact(value * 10), _exact(-value))
    return Form(gold, eq, near)


def fraction(rng: random.Random) -> Form:
    p, q = _reduced(rng)
    sign = rng.choice(["", "", "-"])
    value = Fraction(p, q) * (-1 if sign else 1)
    gold = rng.choice(
        [
            f"{sign}{_frac(p, q)}",
            f"{sign}\\dfrac{{{p}}}{{{q}}}",
            f"{sign}\\tfrac{{{p}}}{{{q}}}",
            f"{sign}{p}/{q}",
            f"\\frac{{{sign}{p}}}{{{q}}}",
        ]
        + ([f"{sign}\\frac{p}{q}"] if p < 10 and q < 10 else [])
    )
    eq = [f"{sign}{_frac(2 * p, 2 * q)}", f"{sign}{p}/{q}", f"{sign}\\dfrac{{{p}}}{{{q}}}"]
    if _terminating(value):
        eq.append(_terminating(value))
    else:
        eq.append(f"{float(value):.6f}")  # Math-Verify compares floats to 6 places
    near = (f"{sign}{_frac(q, p)}", f"{sign}{_frac(p + 1, q)}", f"{sign}{_frac(p, q + 1)}", _signed_frac(-value))
    return Form(gold, tuple(eq), near)


def mixed_number(rng: random.Random) -> Form:
    whole = rng.randint(1, 12)
    p, q = _reduced(rng, 9)
    p = p % q or 1
    value = whole + Fraction(p, q)
    gold = rng.choice([f"{whole}{_frac(p, q)}", f"{whole}\\tfrac{{{p}}}{{{q}}}", f"{whole}\\ {_frac(p, q)}"])
    eq = [_frac(value.numerator, value.denominator), f"{value.numerator}/{value.denominator}"]
    if _terminating(value):
        eq.append(_terminating(value))
    near = (_frac(p, q), f"{whole + 1}{_frac(p, q)}", _frac(whole * p, q))
    return Form(gold, tuple(eq), near)


def percent(rng: random.Random) -> Form:
    k = rng.choice([rng.randint(1, 99), rng.randint(1, 99), rng.randint(101, 400), rng.randint(1, 999) / 10])
    k_text = format(k, "g")
    gold = rng.choice(
        [f"{k_text}\\%", f"{k_text}%", f"{k_text} \\%", f"{k_text}\\text{{\\%}}", f"{k_text}\\text{{ percent}}"]
    )
    eq = (f"{k_text}\\%", f"{k_text}%", k_text, f"{k_text} \\%")
    near = (f"{format(k + 1, 'g')}\\%", format(k + 1, "g"), f"{format(k / 10, 'g')}\\%")
    return Form(gold, eq, near)


def percent_as_fraction(rng: random.Random) -> Form:
    k = rng.choice([5, 10, 12.5, 20, 25, 30, 40, 50, 60, 75, 80, 90, rng.randint(1, 99)])
    decimal_text = format(k / 100, "g")
    value = Fraction(decimal_text)
    gold = rng.choice([decimal_text, _frac(value.numerator, value.denominator)])
    eq = (decimal_text, f"{format(k, 'g')}\\%", f"{format(k, 'g')}%", _frac(value.numerator, value.denominator))
    near = (format(k / 10, "g"), f"{format(k / 10, 'g')}\\%", format(k, "g"))
    return Form(gold, eq, near)


def degrees(rng: random.Random) -> Form:
    d = rng.choice([15, 30, 36, 45, 60, 72, 75, 90, 108, 120, 135, 150, rng.randint(1, 359)])
    gold = rng.choice([f"{d}^\\circ", f"{d}^{{\\circ}}", f"{d}°", f"{d}\\text{{ degrees}}", f"{d}\\,^\\circ"])
    eq = (str(d), f"{d}^\\circ", f"{d}^{{\\circ}}", f"{d}°")
    near = (f"{d + 1}^\\circ", str(180 - d if d != 90 else 45), f"{d / 10:g}^\\circ")
    return Form(gold, eq, near)


_UNITS = ("cm", "m", "km", "inches", "feet", "hours", "minutes", "seconds", "meters", "units", "mph", "cents")


def units(rng: random.Random) -> Form:
    v = rng.choice([rng.randint(1, 999), rng.randint(1, 999) / 4])
    v_text = format(v, "g")
    unit = rng.choice(_UNITS)
    gold = rng.choice(
        [
            f"{v_text}\\text{{ {unit}}}",
            f"{v_text} \\text{{{unit}}}",
            f"{v_text}\\ \\text{{{unit}}}",
            f"{v_text}\\mbox{{ {unit}}}",
            f"{v_text}\\text{{ {unit}}}^2",
            f"\\${v_text}",
            f"\\text{{{v_text} {unit}}}",
        ]
    )
    eq = (v_text, f"{v_text}\\text{{ {unit}}}", f"{v_text} \\text{{{unit}}}")
    near = (format(v + 1, "g"), f"{format(v * 10, 'g')}\\text{{ {unit}}}", format(v / 2, "g"))
    return Form(gold, eq, near)


def scientific(rng: random.Random) -> Form:
    mantissa = Fraction(rng.randint(11, 99), 10)
    exponent = rng.choice([-6, -4, -3, -2, 2, 3, 4, 5, 6, 8])
    m = format(float(mantissa), "g")
    value = mantissa * Fraction(10) ** exponent
    gold = rng.choice(
        [
            f"{m}\\times10^{{{exponent}}}",
            f"{m} \\times 10^{{{exponent}}}",
            f"{m}\\cdot 10^{{{exponent}}}",
            f"{m} \\times 10^{exponent}" if 0 <= exponent < 10 else f"{m}\\times 10^{{{exponent}}}",
        ]
    )
    eq = (_exact(value), f"{_exact(mantissa * 10)}\\times 10^{{{exponent - 1}}}", f"{m}\\times10^{{{exponent}}}")
    near = (f"{m}\\times10^{{{exponent + 1}}}", f"{_exact(mantissa + Fraction(1, 10))}\\times10^{{{exponent}}}", m)
    return Form(gold, eq, near)


def interval(rng: random.Random) -> Form:
    a = rng.randint(-9, 5)
    b = a + rng.randint(1, 9)
    left, right = rng.choice("(["), rng.choice(")]")
    shape = rng.choice(["finite", "finite", "right_inf", "left_inf", "union"])
    if shape == "finite":
        gold, eq = f"{left}{a}, {b}{right}", (f"{left}{a},{b}{right}", f"\\left{left}{a}, {b}\\right{right}")
        near = (f"{'[' if left == '(' else '('}{a}, {b}{right}", f"{left}{a}, {b + 1}{right}")
    elif shape == "right_inf":
        gold, eq = f"{left}{a}, \\infty)", (f"{left}{a},\\infty)", f"\\left{left}{a}, \\infty\\right)")
        near = (f"{'[' if left == '(' else '('}{a}, \\infty)", f"(-\\infty, {a}{right}")
    elif shape == "left_inf":
        gold, eq = f"(-\\infty, {b}{right}", (f"(-\\infty,{b}{right}", f"\\left(-\\infty, {b}\\right{right}")
        near = (f"(-\\infty, {b}{')' if right == ']' else ']'}", f"(-\\infty, {b + 1}{right}")
    else:
        gold = f"(-\\infty, {a}) \\cup ({b}, \\infty)"
        eq = (f"({b}, \\infty) \\cup (-\\infty, {a})", f"(-\\infty,{a})\\cup({b},\\infty)")
        near = (f"(-\\infty, {a}] \\cup ({b}, \\infty)", f"({a}, {b})")
    return Form(gold, eq, near)


def finite_set(rng: random.Random) -> Form:
    elements = rng.sample(range(-9, 15), rng.randint(2, 4))
    text = [str(e) for e in elements]
    shuffled = rng.sample(text, len(text))
    gold = rng.choice([f"\\{{{', '.join(text)}\\}}", f"\\left\\{{{', '.join(text)}\\right\\}}"])
    eq = (f"\\{{{', '.join(shuffled)}\\}}", f"\\{{{','.join(text)}\\}}")
    changed = text[:-1] + [str(elements[-1] + 20)]
    near = (f"\\{{{', '.join(changed)}\\}}", f"\\{{{', '.join(text[:-1])}\\}}")
    return Form(gold, eq, near)


def ordered_tuple(rng: random.Random) -> Form:
    values = [rng.randint(-9, 9) for _ in range(rng.choice([2, 2, 3]))]
    if len(set(values)) == 1:
        values[0] += 1
    inner = ", ".join(map(str, values))
    gold = rng.choice([f"({inner})", f"\\left({inner}\\right)"])
    eq = (f"({','.join(map(str, values))})", f"\\left( {inner} \\right)")
    near = (f"({', '.join(map(str, values[::-1]))})", f"({', '.join(map(str, values[:-1] + [values[-1] + 1]))})")
    return Form(gold, eq, near)


def _matrix(env: str, rows: list[list[int]]) -> str:
    body = " \\\\ ".join(" & ".join(map(str, row)) for row in rows)
    return f"\\begin{{{env}}} {body} \\end{{{env}}}"


def matrix(rng: random.Random) -> Form:
    shape = rng.choice([(2, 2), (2, 1), (3, 1), (2, 3)])
    rows = [[rng.randint(-9, 9) for _ in range(shape[1])] for _ in range(shape[0])]
    env = rng.choice(["pmatrix", "bmatrix"])
    other = "bmatrix" if env == "pmatrix" else "pmatrix"
    bumped = [row[:] for row in rows]
    bumped[-1][-1] += 1
    transposed = [list(col) for col in zip(*rows)]
    near = [_matrix(env, bumped)]
    if transposed != rows:
        near.append(_matrix(env, transposed))
    return Form(_matrix(env, rows), (_matrix(other, rows), _matrix(env, rows).replace(" ", "")), tuple(near))


def equation(rng: random.Random) -> Form:
    var = rng.choice("xyank")
    if rng.random() < 0.6:
        n = rng.randint(-20, 20)
        gold = rng.choice([f"{var} = {n}", f"{var}={n}"])
        return Form(gold, (str(n), f"{var}={n}", f"{var} = {n}.0"), (str(n + 1), f"{var} = {-n if n else 1}"))
    m, c = rng.randint(2, 9), rng.randint(1, 9)
    gold = f"y = {m}x + {c}"
    return Form(gold, (f"y={c}+{m}x", f"y = {m}x+{c}"), (f"y = {m}x - {c}", f"y = {m + 1}x + {c}"))


def expression(rng: random.Random) -> Form:
    a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7, 10, 11])
    shape = rng.choice(["radical", "square", "pi", "complex", "radical_frac", "power", "binom", "linear"])
    if shape == "radical":
        eq = (f"\\sqrt{{{a * a * b}}}", f"{a} \\sqrt{b}")
        return Form(f"{a}\\sqrt{{{b}}}", eq, (f"{a + 1}\\sqrt{{{b}}}", f"\\sqrt{{{a * b}}}"))
    if shape == "square":
        eq = (f"(x+{a})^2", f"x^2+{a * a}+{2 * a}x")
        return Form(f"x^2 + {2 * a}x + {a * a}", eq, (f"(x-{a})^2", f"(x+{a + 1})^2"))
    if shape == "pi":
        eq = (f"\\frac{{{a}}}{{{b}}}\\pi", f"{a}\\pi/{b}")
        return Form(f"\\frac{{{a}\\pi}}{{{b}}}", eq, (f"\\frac{{{b}\\pi}}{{{a}}}", f"\\frac{{{a}}}{{{b}}}"))
    if shape == "complex":
        return Form(f"{a} + {b}i", (f"{b}i + {a}", f"{a}+{b}i"), (f"{a} - {b}i", f"{b} + {a}i"))
    if shape == "radical_frac":
        eq = (f"\\frac{{1}}{{{a}}}\\sqrt{{{b}}}", f"\\sqrt{{{b}}}/{a}")
        near = (f"\\frac{{\\sqrt{{{b}}}}}{{{a + 1}}}", f"\\frac{{{a}}}{{\\sqrt{{{b}}}}}")
        return Form(f"\\frac{{\\sqrt{{{b}}}}}{{{a}}}", eq, near)
    if shape == "power":
        k = rng.randint(2, 10)
        eq = (str(a**k), f"{a}^{k}" if k < 10 else str(a**k))
        return Form(f"{a}^{{{k}}}", eq, (str(a**k + 1), f"{a}^{{{k + 1}}}"))
    if shape == "binom":
        n, k = a + 3, rng.randint(1, a)
        eq = (str(comb(n, k)), f"\\dbinom{{{n}}}{{{k}}}")
        return Form(f"\\binom{{{n}}}{{{k}}}", eq, (str(comb(n, k) + 1), f"\\binom{{{n}}}{{{k + 1}}}"))
    return Form(f"{a}x + {b}", (f"{b} + {a}x", f"{a}x+{b}"), (f"{a}x - {b}", f"{b}x + {a}"))


def plus_minus(rng: random.Random) -> Form:
    a, b = rng.randint(1, 9), rng.choice([2, 3, 5, 7])
    if rng.random() < 0.5:
        gold = rng.choice([f"\\pm {a}", f"\\pm{a}"])
        return Form(gold, (f"{a}, -{a}", f"-{a}, {a}", f"\\pm {a}"), (str(a), f"\\pm {a + 1}"))
    gold = f"{a} \\pm \\sqrt{{{b}}}"
    eq = (f"{a}+\\sqrt{{{b}}}, {a}-\\sqrt{{{b}}}", f"{a}-\\sqrt{{{b}}}, {a}+\\sqrt{{{b}}}", f"{a}\\pm\\sqrt{{{b}}}")
    return Form(gold, eq, (f"{a}+\\sqrt{{{b}}}", f"{a} \\pm \\sqrt{{{b + 1}}}"))


def multiple_answers(rng: random.Random) -> Form:
    roots = [str(r) for r in rng.sample(range(-9, 12), rng.choice([2, 2, 3]))]
    gold = rng.choice([", ".join(roots), ",".join(roots), " \\text{ and } ".join(roots), "; ".join(roots)])
    shuffled = rng.sample(roots, len(roots))
    eq = (", ".join(shuffled), ",".join(roots), f"\\{{{', '.join(roots)}\\}}")
    near = (", ".join(roots[:-1]), ", ".join(roots[:-1] + [str(int(roots[-1]) + 20)]))
    return Form(gold, eq, near)


_WORDS = (("Yes", "No"), ("even", "odd"), ("Monday", "Tuesday"), ("Alice", "Bob"), ("true", "false"))


def plain_text(rng: random.Random) -> Form:
    if rng.random() < 0.4:
        letter, other = rng.sample("ABCDE", 2)
        gold = rng.choice(
            [f"\\text{{({letter})}}", f"({letter})", letter, f"\\textbf{{({letter})}}", f"\\text{{{letter}}}"]
        )
        return Form(gold, (f"\\text{{({letter})}}", f"({letter})", letter), (f"\\text{{({other})}}", other))
    word, other = rng.choice(_WORDS)
    gold = rng.choice([f"\\text{{{word}}}", word, f"\\textbf{{{word}}}", f"\\mathrm{{{word}}}"])
    return Form(gold, (f"\\text{{{word}}}", word, f"\\text{{{word.lower()}}}"), (f"\\text{{{other}}}", other))


def inequality(rng: random.Random) -> Form:
    a = rng.randint(-9, 9)
    b = a + rng.randint(1, 8)
    if rng.random() < 0.5:
        gold = rng.choice([f"x > {a}", f"x>{a}"])
        return Form(gold, (f"{a} < x", f"({a}, \\infty)", f"x>{a}"), (f"x \\ge {a}", f"x > {a + 1}", f"x < {a}"))
    gold = f"{a} < x \\le {b}"
    return Form(gold, (f"({a}, {b}]", f"{a}<x\\leq {b}"), (f"[{a}, {b}]", f"{a} < x < {b}"))


FORMS: dict[str, Callable[[random.Random], Form]] = {
    "integer": integer,
    "thousands": thousands,
    "decimal": decimal,
    "fraction": fraction,
    "mixed_number": mixed_number,
    "percent": percent,
    "percent_as_fraction": percent_as_fraction,
    "degrees": degrees,
    "units": units,
    "scientific": scientific,
    "interval": interval,
    "set": finite_set,
    "tuple": ordered_tuple,
    "matrix": matrix,
    "equation": equation,
    "expression": expression,
    "plus_minus": plus_minus,
    "multiple_answers": multiple_answers,
    "plain_text": plain_text,
    "inequality": inequality,
}

# How a dataset row may hold its gold answer.
GOLD_WRAPPERS: dict[str, Callable[[str], str]] = {
    "bare": lambda g: g,
    "dollar": lambda g: f"${g}$",
    "paren": lambda g: f"\\({g}\\)",
    "boxed": lambda g: f"\\boxed{{{g}}}",
    "dollar_boxed": lambda g: f"$\\boxed{{{g}}}$",
}
_WRAPPER_WEIGHTS = (4, 2, 1, 2, 1)


def _response(rng: random.Random, answer: str, draft: str) -> tuple[str, str]:
    """A response whose answer part boxes `answer` last, and the exact content of that last box."""
    template = rng.randrange(5)
    if template == 0:
        think = f"<think>Try {draft}: maybe \\boxed{{{draft}}}? No.</think>"
        return f"{think}\nSo the final answer is $\\boxed{{{answer}}}$.", answer
    if template == 1:
        return f"The answer is \\boxed{{{answer}}}.", answer
    if template == 2:
        return f"A first guess was \\boxed{{{draft}}}, but checking again gives \\boxed{{{answer}}}", answer
    if template == 3:
        return f"<think>Working.</think> Therefore \\[\\boxed{{{answer}}}\\]", answer
    return f"Final answer: \\boxed{{ {answer} }}", f" {answer} "


def pair(index: int, seed: int = 0) -> MathPair:
    rng = random.Random(f"math-corpus:{seed}:{index}")
    categories = list(FORMS)
    category = categories[index % len(categories)]
    form = FORMS[category](rng)
    kind = rng.choices(KINDS, weights=_KIND_WEIGHTS)[0]
    if kind == "equivalent":
        answer = rng.choice(form.equivalent)
    elif kind == "near_miss":
        answer = rng.choice(form.near_miss)
    else:
        other = FORMS[rng.choice([c for c in categories if c != category])](rng)
        answer = rng.choice(other.equivalent)
    wrapper = rng.choices(list(GOLD_WRAPPERS), weights=_WRAPPER_WEIGHTS)[0]
    response, boxed = _response(rng, answer, rng.choice(form.near_miss))
    return MathPair(
        index=index,
        category=category,
        wrapper=wrapper,
        kind=kind,
        gold=GOLD_WRAPPERS[wrapper](form.gold),
        answer=boxed,
        response=response,
    )


def corpus(n: int, seed: int = 0) -> list[MathPair]:
    return [pair(i, seed) for i in range(n)]
