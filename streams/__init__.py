"""What the workers run on, and the tools around them.

Runtime (what ``workers/`` import): ``settings``, ``observability``, ``model_cache``,
``exceptions``, ``kafka/``, ``edge/``, ``state/``. Around it: ``ops/`` (operator tools on a
running system), ``tools/`` (demo, evaluation, local services and processes, docs), ``cli/``
(thin commands: options to a call). Imports only go from the tools to the runtime, never
back; ``tests/unit/test_layout.py`` holds the rules.
"""
