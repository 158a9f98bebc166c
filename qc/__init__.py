"""Quality control: lip-sync scoring, technical checks, the gate policy and review sampling."""
