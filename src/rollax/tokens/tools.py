"""The shipped tools (protocol in `toolbox`): a calculator, and a lookup into the prompt's table."""

from __future__ import annotations

import jax.numpy as jnp

from rollax.tokens.tasks import decimal_value, pack
from rollax.tokens.toolbox import Tool

MAX_OPERAND_DIGITS = 4  # 9999 * 9999 < 2**31: exact in int32
NUMBER_SLOTS = 9  # digits of the largest |result| written


def is_digit(codes):
    return (codes >= ord("0")) & (codes <= ord("9"))


def write_number(value, length: int):
    """`value`'s decimal code points (a leading '-' when negative), left-aligned in `length`."""
    powers = 10 ** jnp.arange(NUMBER_SLOTS - 1, -1, -1)
    digits = (jnp.abs(value) // powers) % 10
    significant = (jnp.cumsum(digits > 0) > 0) | (jnp.arange(NUMBER_SLOTS) == NUMBER_SLOTS - 1)
    codes = jnp.concatenate([jnp.array([ord("-")]), ord("0") + digits])
    return pack(codes, jnp.concatenate([(value < 0)[None], significant]), length, left=False)


def calculate(call, prompt):
    """`a+b`, `a-b` or `a*b` of non-negative integers of 1 to 4 digits."""
    used = call != 0
    operators = jnp.array([ord("+"), ord("-"), ord("*")])
    is_operator = jnp.any(call[:, None] == operators, axis=1)
    at = jnp.argmax(is_operator)
    position = jnp.arange(call.shape[0])
    left, right = used & (position < at), used & (position > at)
    ok = (jnp.sum(is_operator) == 1) & jnp.all(is_digit(call) | is_operator | ~used) \
        & (jnp.sum(left) >= 1) & (jnp.sum(left) <= MAX_OPERAND_DIGITS) \
        & (jnp.sum(right) >= 1) & (jnp.sum(right) <= MAX_OPERAND_DIGITS)
    a, b = decimal_value(call, left, ord("0")), decimal_value(call, right, ord("0"))
    operator = call[at]
    value = jnp.where(operator == ord("+"), a + b, jnp.where(operator == ord("-"), a - b, a * b))
    return write_number(value, CALCULATOR_RESULT), ok


CALCULATOR_RESULT = 8  # 9999 * 9999 = 99980001
CALCULATOR = Tool("calculator", calculate, call_length=2 * MAX_OPERAND_DIGITS + 1,
                  result_length=CALCULATOR_RESULT, chars="0123456789+-*er", error="err")


def look_up(call, prompt):
    """The two digits after the first place in the prompt where the call's one character (a
    key) stands before two digits: `a31b07c52` and the call `b` give `07`."""
    codes = jnp.concatenate([prompt, jnp.zeros(2, prompt.dtype)])
    n = prompt.shape[0]
    entry = (codes[:n] == call[0]) & is_digit(codes[1:n + 1]) & is_digit(codes[2:n + 2])
    at = jnp.argmax(entry)
    ok = (call[0] != 0) & (jnp.sum(call != 0) == 1) & jnp.any(entry)
    return jnp.stack([codes[at + 1], codes[at + 2], jnp.zeros((), codes.dtype)]), ok


LOOKUP = Tool("lookup", look_up, call_length=1, result_length=3,
              chars="0123456789abcdefghr", error="err")
