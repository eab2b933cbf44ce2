from services.projector.bootstrap import main
from shared.service import run_service

run_service("projector", main)
