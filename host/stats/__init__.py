"""Statistics over repeated benchmark runs (pure numpy; nothing here imports the agent or a runtime).

`repetitions`: one artifact measured in k independent repetitions -> the median, its between-run CI
(order statistics over the repetition medians), the between-run coefficient of variation, `unstable`.
`paired`: two artifacts measured in the same interleaved rounds -> the ratio of medians, its CI from
the per-round ratios, and whether the difference is beyond the device's noise floor.
"""
