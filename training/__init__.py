"""Training stages: reasoning-data synthesis, R-SFT, hard-sample mining and weighted HS-DPO (TRL)."""
