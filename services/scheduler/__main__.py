from services.scheduler.bootstrap import main
from shared.service import run_service

run_service("scheduler", main)
