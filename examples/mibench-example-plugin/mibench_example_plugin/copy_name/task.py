import random

from mibench.data.example import Counterfactual, Example
from mibench.data.registry import register_task
from mibench.data.task import Task, fill, last_word_span
from mibench.tasks.ioi.task import NAMES
TEMPLATES = (
    "Everyone says that {NAME} is nice, so I like",
    "I heard that {NAME} is kind, so I thanked",
    "People say {NAME} is funny, so we invited",
    "Apparently {NAME} is clever, so they hired",
)


@register_task("example:copy-name")
class CopyNameTask(Task):
    def draw(self, rng: random.Random) -> tuple[str, Example]:
        template = rng.choice(TEMPLATES)
        name, other = rng.sample(NAMES, 2)
        prompt, slots = fill(template, {"NAME": name})
        cf_prompt, cf_slots = fill(template, {"NAME": other})
        spans = {"NAME": slots["NAME"], "END": last_word_span(prompt)}
        cf_spans = {"NAME": cf_slots["NAME"], "END": last_word_span(cf_prompt)}
        example = Example(
            id="", prompt=prompt, answer=" " + name, spans=spans, variables={"name": name}, template=template,
            counterfactuals={"other_name": Counterfactual(cf_prompt, " " + other, {"name": other}, cf_spans)},
        )
        return f"{template}|{name}", example
