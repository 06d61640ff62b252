"""mapillaryd against the real mapillary_tools 0.14.7, on the same local sandbox.

``python -m bench`` (or ``make bench``) uploads one synthetic drive with each contender, each to
its own fresh sandbox, and prints wall time, CPU time, throughput, requests and bytes for both,
with the ratios mapillaryd ÷ mapillary_tools. See ``bench/README.md`` for what exactly is
measured and how to read it.

Modules: :mod:`bench.proc` (a child process timed with its own rusage), :mod:`bench.sandbox`
(the sandbox in a process of its own), :mod:`bench.contenders` (one run of each contender),
:mod:`bench.verify` (what the sandbox must hold afterwards), :mod:`bench.report` (medians,
ratios, the table and the JSON) and :mod:`bench.cli` (the command line).
"""
