"""Entry point: `python -m bench` (scenarios against the ceilings) or `python -m bench report`
(the published comparison with the peer: bench/RESULTS.md and its plots) or `python -m bench bulk`
(bulk scoring four ways: bench/bulk.json and its section of bench/RESULTS.md) or `python -m bench
priority` (interactive callers beside a bulk flood: bench/priority.json) or `python -m bench explain`
(explanations' latency, and other callers beside a flood of them: bench/explain.json) or `python -m
bench presets` (the default model beside `large`, each on the graph it is served as:
bench/presets.json)."""

import sys

if sys.argv[1:2] == ["report"]:
    from bench.report import main as report

    report(sys.argv[2:])
elif sys.argv[1:2] == ["priority"]:
    from bench.priority import main as priority

    priority(sys.argv[2:])
elif sys.argv[1:2] == ["explain"]:
    from bench.explain import main as explain

    explain(sys.argv[2:])
elif sys.argv[1:2] == ["presets"]:
    from bench.presets import main as presets

    presets(sys.argv[2:])
elif sys.argv[1:2] == ["bulk"]:
    from bench.bulk import main as bulk

    bulk(sys.argv[2:])
else:
    from bench.run import main

    main()
