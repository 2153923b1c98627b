"""How each row of the experiment is built; the rows themselves are declared in :mod:`promoe.registry`.

``heuristics`` (model-free floors), ``models`` (the backbone and the trained models), ``routers``
(zero-shot routers over the trained ``moe``'s experts), ``ablations`` (other descriptions for
``promoe``'s router), ``conditions`` (in-context prompts and few-shot fine-tuning of the models).
"""
