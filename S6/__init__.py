"""Sprint 6: position sizing, kill-switch, stress tests and webhook alerts (see S6/README.md).

Modules: config (RiskConfig), sizing, filters, killswitch, alerts, stress_analysis, stress_report;
scripts: risk.py, stress.py. Nothing is imported here so ``import S6`` stays cheap.
"""
