"""The defences the bench attacks: whatever the workbench can apply, as one data type.

A defence is a set of interventions (the clamp hooks) and/or a model variant (an RMU or persistent run's
weights), so every attack scores every defence through the same code path: ``scoring`` under
``applied(engine, variant)`` with the hooks on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

from unlearn_core.evaluation.targets import Target, default_intervention
from unlearn_core.method.interventions import Intervention
from unlearn_core.training.variants import is_variant

MODES = ("clamp", "gated", "dsg")


@dataclass(frozen=True)
class Defence:
    name: str  # as asked for: "default", "clamp", "gated", "dsg", "rmu:<run>, persist:<run>", "none"
    interventions: tuple[Intervention, ...] = ()
    variant: str | None = None  # "rmu:<run>, persist:<run>": its weights, applied while scoring

    def applied(self, engine):
        """The engine with this defence's weights (RMU, persistent) in place for the block."""
        if not self.variant:
            return contextlib.nullcontext(engine)
        from unlearn_core.training.variants import applied

        return applied(engine, self.variant)

    def describe(self) -> dict:
        ivs = [
            {"mode": iv.mode, "c": iv.value, "n_features": len(iv.features), "tau": iv.gate, "sae": iv.sae_key}
            for iv in self.interventions
        ]
        return {"name": self.name, "interventions": ivs, "variant": self.variant}


def parse_defences(engine, target: Target, spec: str) -> list[Defence]:
    """``default`` (the target's default intervention), ``clamp``/``gated``/``dsg`` (the default's
    features and c in that mode; a gate calibrated as the default's is), ``rmu:<run>, persist:<run>`` (a trained
    RMU run), ``none`` (the clean model: a control whose recovery must be empty)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError("no defence given; choose from default, clamp, gated, dsg, rmu:<run>, persist:<run>, none")
    if len(set(names)) != len(names):
        raise ValueError(f"a defence is named twice in {spec!r}")
    base: Intervention | None = None
    out = []
    for name in names:
        if name == "none":
            out.append(Defence("none"))
        elif is_variant(name):
            from unlearn_core.training.variants import load

            load(engine.settings.cache_dir, name)  # an unknown run fails now, by name
            out.append(Defence(name, (), name))
        elif name == "default" or name in MODES:
            base = base or default_intervention(engine, target)
            out.append(Defence(name, (base if name == "default" else with_mode(engine, target, base, name),)))
        else:
            raise ValueError(
                f"unknown defence {name!r}; choose from default, clamp, gated, dsg, rmu:<run>, persist:<run>, none"
            )
    return out


def with_mode(engine, target: Target, base: Intervention, mode: str) -> Intervention:
    """The default's features and c in ``mode``; a gated mode's tau as the default's is calibrated."""
    if mode == "clamp":
        return replace(base, mode="clamp", gate=None)
    tau = base.gate
    if tau is None:
        from unlearn_core.method.gate import tau_over

        corpora = list(target.retain_corpora)
        tau = tau_over(engine, base.sae_key, base.features, corpora, target.intervention.gate_percentile)["tau"]
    return replace(base, mode=mode, gate=tau)
