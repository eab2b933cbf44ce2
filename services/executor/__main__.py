from services.executor.bootstrap import main
from shared.service import run_service

run_service("executor", main, with_metrics=True)
