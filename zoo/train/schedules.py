"""Learning-rate schedules built from optax primitives.

Every schedule is created by :func:`create_schedule` and is an ``optax.Schedule``:
a pure, jittable function ``step -> lr`` that takes an integer step (a Python
int or an int32 array of any shape) and returns a float32 array of the same
shape. It can be passed straight to any optax optimizer, e.g.
``optax.adamw(create_schedule("cosine", learning_rate=3e-4, warmup_steps=1000,
total_steps=100_000))``.

Notation used in the closed forms below: ``t`` is the step, ``L`` is
``learning_rate``, ``W`` is ``warmup_steps``, ``T`` is ``total_steps``,
``E = end_lr_fraction * L`` is the final value and ``D`` is the number of decay
steps of the ``"wsd"`` schedule. Every schedule except ``"rsqrt"`` starts with
the same linear warm-up ``L * t / W`` for ``0 <= t < W`` (skipped when
``W == 0``) and stays at its final value for ``t >= T``:

* ``"cosine"``:   ``E + (L - E) * 0.5 * (1 + cos(pi * (t - W) / (T - W)))`` for ``W <= t <= T``.
* ``"linear"``:   ``L + (E - L) * (t - W) / (T - W)`` for ``W <= t <= T``.
* ``"constant"``: ``L`` for ``t >= W``.
* ``"wsd"`` (warm-up / stable / decay): ``L`` for ``W <= t < T - D`` and
  ``L + (E - L) * (t - (T - D)) / D`` for ``T - D <= t <= T``, where
  ``D = max(1, round(decay_fraction * T))``.
* ``"rsqrt"`` (alias ``"noam"``, Vaswani et al. 2017, "Attention is all you need"):
  ``L * d_model**-0.5 * min(t**-0.5, t * W**-1.5)``, with value 0 at ``t == 0``.
  Here ``learning_rate`` is a *multiplier*, not the peak: the peak is
  ``L * d_model**-0.5 * W**-0.5``, reached at ``t == W``.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import optax

__all__ = ["SCHEDULES", "create_schedule"]

SCHEDULES: tuple[str, ...] = ("cosine", "linear", "rsqrt", "constant", "wsd")
"""Names accepted by :func:`create_schedule` (``"noam"`` is also accepted, as an alias of ``"rsqrt"``)."""

_ALIASES = {"noam": "rsqrt"}
_DECAYING = ("cosine", "linear", "wsd")


def create_schedule(
    name: str,
    *,
    learning_rate: float,
    warmup_steps: int,
    total_steps: int,
    d_model: int | None = None,
    decay_fraction: float = 0.1,
    end_lr_fraction: float = 0.0,
) -> optax.Schedule:
    """Create a learning-rate schedule by name.

    Closed forms (``t`` = step, ``L`` = learning_rate, ``W`` = warmup_steps,
    ``T`` = total_steps, ``E`` = end_lr_fraction * L; the warm-up is
    ``L * t / W`` for ``t < W`` in all but ``"rsqrt"``):

    * ``"cosine"``:   warm-up, then ``E + (L - E) * 0.5 * (1 + cos(pi * (t - W) / (T - W)))``; ``E`` for ``t >= T``.
    * ``"linear"``:   warm-up, then ``L + (E - L) * (t - W) / (T - W)``; ``E`` for ``t >= T``.
    * ``"constant"``: warm-up, then ``L``.
    * ``"wsd"``:      warm-up, ``L`` until ``T - D``, then ``L + (E - L) * (t - (T - D)) / D``;
      ``E`` for ``t >= T``; ``D = max(1, round(decay_fraction * T))``.
    * ``"rsqrt"`` / ``"noam"``: ``L * d_model**-0.5 * min(t**-0.5, t * W**-1.5)``, 0 at ``t == 0``.
      ``learning_rate`` is a multiplier here: the peak value is
      ``L * d_model**-0.5 * W**-0.5`` at ``t == W``. With ``W == 0`` it is the
      pure inverse-square-root decay ``L * d_model**-0.5 * t**-0.5`` (still 0 at ``t == 0``).

    Args:
      name: one of :data:`SCHEDULES` (case-insensitive), or ``"noam"``.
      learning_rate: peak learning rate (a multiplier for ``"rsqrt"``).
      warmup_steps: length of the linear warm-up from 0; ``0`` disables it.
      total_steps: step at which the decaying schedules reach their final value.
      d_model: model width; required by ``"rsqrt"``, ignored otherwise.
      decay_fraction: fraction of ``total_steps`` spent decaying in ``"wsd"``, in (0, 1].
      end_lr_fraction: final value as a fraction of ``learning_rate`` for the
        decaying schedules (``"cosine"``, ``"linear"``, ``"wsd"``), in [0, 1].

    Returns:
      A jittable ``optax.Schedule`` mapping an integer step to a float32 learning rate.

    Raises:
      ValueError: unknown name, or an invalid / inconsistent argument.
    """
    if not isinstance(name, str):
        raise ValueError(f"schedule name must be a string, one of {_available()}; got {name!r}.")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SCHEDULES:
        raise ValueError(f"Unknown schedule {name!r}; pick one of {_available()}.")

    warmup_steps = _as_int("warmup_steps", warmup_steps)
    total_steps = _as_int("total_steps", total_steps)
    if warmup_steps < 0:
        raise ValueError(
            f"warmup_steps must be >= 0, got {warmup_steps}; pass warmup_steps=0 to disable warm-up."
        )
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}; pass the number of training steps.")
    if key in _DECAYING and warmup_steps > total_steps:
        raise ValueError(
            f"warmup_steps ({warmup_steps}) > total_steps ({total_steps}) for the decaying schedule "
            f"{key!r}; lower warmup_steps or raise total_steps."
        )
    if not 0.0 < decay_fraction <= 1.0:
        raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}; e.g. decay_fraction=0.1.")
    if not 0.0 <= end_lr_fraction <= 1.0:
        raise ValueError(f"end_lr_fraction must be in [0, 1], got {end_lr_fraction}; e.g. end_lr_fraction=0.0.")

    lr = float(learning_rate)
    end_lr = end_lr_fraction * lr

    if key == "rsqrt":
        fn = _rsqrt(lr, warmup_steps, d_model)
    elif key == "constant":
        fn = _with_warmup(lr, warmup_steps, optax.constant_schedule(lr))
    elif key == "cosine":
        if total_steps > warmup_steps:
            fn = optax.warmup_cosine_decay_schedule(
                init_value=0.0,
                peak_value=lr,
                warmup_steps=warmup_steps,
                decay_steps=total_steps,
                end_value=end_lr,
            )
        else:  # W == T: no room to decay, the end value is reached at T.
            fn = _with_warmup(lr, warmup_steps, optax.constant_schedule(end_lr))
    elif key == "linear":
        fn = _with_warmup(lr, warmup_steps, _linear_decay(lr, end_lr, total_steps - warmup_steps))
    else:  # "wsd"
        decay_steps = max(1, round(decay_fraction * total_steps))
        decay_start = total_steps - decay_steps
        if warmup_steps > decay_start:
            raise ValueError(
                f"wsd: warmup_steps ({warmup_steps}) overlaps the decay phase, which starts at step "
                f"{decay_start} (= total_steps - round(decay_fraction * total_steps)); lower warmup_steps "
                f"or decay_fraction."
            )
        stable_and_decay = optax.join_schedules(
            [optax.constant_schedule(lr), optax.linear_schedule(lr, end_lr, decay_steps)],
            [decay_start - warmup_steps],
        )
        fn = _with_warmup(lr, warmup_steps, stable_and_decay)

    return _as_float32_schedule(fn)


def _available() -> str:
    return ", ".join(repr(n) for n in SCHEDULES) + " (or 'noam', an alias of 'rsqrt')"


def _as_int(arg: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{arg} must be an integer, got {value!r}; pass a whole number, e.g. {arg}=int(...).")
    return int(value)


def _with_warmup(lr: float, warmup_steps: int, after: optax.Schedule) -> optax.Schedule:
    """Linear warm-up ``lr * t / W`` for ``t < W``, then ``after(t - W)``; just ``after`` when ``W == 0``."""
    if warmup_steps == 0:
        return after
    warmup = optax.linear_schedule(init_value=0.0, end_value=lr, transition_steps=warmup_steps)
    return optax.join_schedules([warmup, after], [warmup_steps])


def _linear_decay(lr: float, end_lr: float, decay_steps: int) -> optax.Schedule:
    """``lr + (end_lr - lr) * t / decay_steps``, clipped to ``end_lr``; ``end_lr`` throughout when ``decay_steps == 0``."""
    if decay_steps == 0:
        return optax.constant_schedule(end_lr)
    return optax.linear_schedule(init_value=lr, end_value=end_lr, transition_steps=decay_steps)


def _rsqrt(lr: float, warmup_steps: int, d_model: int | None) -> optax.Schedule:
    """Noam schedule ``lr * d_model**-0.5 * min(t**-0.5, t * W**-1.5)``, 0 at ``t == 0``.

    ``t**-0.5`` is evaluated at ``max(t, 1)``, so neither branch is ever inf/NaN
    (under ``jit`` both sides of a ``where`` are computed, and so are their gradients).
    """
    if d_model is None:
        raise ValueError("The 'rsqrt' (Noam) schedule needs the model width: pass d_model=<model dimension>.")
    d_model = _as_int("d_model", d_model)
    if d_model <= 0:
        raise ValueError(f"d_model must be > 0, got {d_model}; pass the model dimension.")
    scale = lr * d_model**-0.5

    def schedule(step: jax.Array) -> jax.Array:
        t = jnp.maximum(step, 0.0)
        decay = jax.lax.rsqrt(jnp.maximum(t, 1.0))
        if warmup_steps > 0:
            factor = jnp.minimum(decay, t * warmup_steps**-1.5)  # already 0 at t == 0
        else:
            factor = jnp.where(t > 0.0, decay, 0.0)
        return scale * factor

    return schedule


def _as_float32_schedule(fn: optax.Schedule) -> optax.Schedule:
    """Feed ``fn`` a float32 step (strict dtype promotion) and return a float32 value."""

    def schedule(step: jax.typing.ArrayLike) -> jax.Array:
        t = jnp.asarray(step).astype(jnp.float32)
        value = jnp.asarray(fn(t), dtype=jnp.float32)
        return jnp.broadcast_to(value, t.shape)  # constant pieces return a scalar

    return schedule
