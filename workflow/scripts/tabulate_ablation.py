"""The ablation table: per-arm means and the adversarial - uniform difference with its interval and
MDD, overall and per held-out family; the family x level composition of the hard and new data."""
import json
from pathlib import Path

from lionflow.ablation import (
    SETS,
    arm_files,
    compare,
    composition_table,
    manipulation_table,
    manipulation_verdict,
    requests_table,
    table,
)
from lionflow.artifacts import atomic_write, read_json, read_jsonl, write_json
from lionflow.report import html, html_page, markdown, plot_ablation, plot_ablation_by_family
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
iterations, declared = snakemake.params.iterations, set(snakemake.input)
summaries, items, sets = {}, {}, {}
for arm in snakemake.params.arms:
    key, files = (arm["strategy"], arm["seed"]), arm_files(arm["run"], iterations)
    if undeclared := [p for paths in files.values() for p in paths if p not in declared]:
        raise ValueError(f"tabulate_ablation reads files its rule does not declare: {undeclared}")
    summaries[key] = read_json(files["summary"][0], "summary")
    items[key] = {k: json.loads(Path(path).read_text())["lionflow"]["items"]   # k = 0: the base student
                  for k, path in zip([0, *iterations], files["lm_eval"])}
    set_files = iter(files["sets"])
    sets[key] = {k: {name: read_jsonl(next(set_files), kind) for name, (_, kind) in SETS.items()} for k in iterations}
ablation = compare(summaries, snakemake.params.seeds, snakemake.params.confidence, items=items, sets=sets,
                   effect_of_interest=snakemake.params.effect_of_interest)
write_json(snakemake.output.ablation, ablation, "ablation")
n = len(ablation["seeds"])
level = f"{100 * ablation['confidence']:g}%"
intro = (f"Adversarial vs uniform generation, paired by seed over seeds {ablation['seeds']}: mean of each arm, mean "
         f"difference adversarial - uniform, its {level} t interval (df = {n - 1}) and the minimal detectable "
         f"difference (MDD: (t_(1+c)/2 + t_0.8) * sd / sqrt({n}), the difference this design finds with power 0.8); "
         f"an interval that contains 0 reads \"too little power\" where the MDD exceeds the effect of interest "
         f"({ablation['effect_of_interest']:g} points, experiment.effect_of_interest). "
         "Iteration 1 precedes any generation: both arms of a seed share it, so its difference is 0.")
by_family = ("The same comparison per held-out lm-eval task and family (`<task> <family>`) and level "
             "(`... L<level>`), on that family's items (`items`): where the adversarial data goes, what it buys. "
             "Iteration 0 is the base student, where both arms start (shared: difference 0).")
composition = ("Mean number of instructions over seeds, per level (L1 / L2 / ...), by the oracle task family "
               "they parse as: the cache pool, the referee's hard split cut from it, and the generator's new hard "
               "and new easy instructions (`other`: no oracle family).")
manipulation = (manipulation_verdict(ablation["manipulation"], ablation["confidence"]) + " Total variation (TV) "
                "distance between the family x level mixes, 0 (the same mix) to 1 (disjoint): the arms' new "
                "instructions, and each arm's hard split against its cache pool; per seed, mean with its "
                f"{level} t interval over seeds, and the p-value of a chi-square test of the same mix (counts "
                "pooled over seeds). Sampling alone gives a TV above 0.")
budget = "Mean LLM requests per stage and arm over all iterations (the budget the arms share)."
sections = [("Manipulation check", manipulation, manipulation_table(ablation)), ("Outcomes", intro, table(ablation)), ("By family and level", by_family, table(ablation, "by_family")),
            ("Hard split and new instructions by family and level", composition, composition_table(ablation)),
            ("Budget", budget, requests_table(ablation))]
atomic_write(snakemake.output.markdown, "# Ablation\n\n" + "\n\n".join(
    f"## {title}\n\n{text}\n\n{markdown(t)}" for title, text, t in sections) + "\n")
atomic_write(snakemake.output.table, html_page("Ablation: adversarial vs uniform generation",
                                               [(title, text, html(t)) for title, text, t in sections]))
plot_ablation(ablation, snakemake.output.plot)
plot_ablation_by_family(ablation, snakemake.output.family_plot)
log.info("ablation over %d seeds: %d rows, %d family rows", n, len(ablation["rows"]), len(ablation["by_family"]))
