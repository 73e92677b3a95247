import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from ledger.partitions import ensure_partitions, existing_partitions

# A partition a month: 100 years ahead is already far more than any ledger needs, and each one is
# a table the server keeps in its catalog and locks on every query of the whole table.
MAX_MONTHS_AHEAD = 1200
FIRST_YEAR = 2000


class Command(BaseCommand):
    help = "Create the monthly partitions of ledger_entry ahead of time (and list them)."

    def add_arguments(self, parser):
        parser.add_argument("--months-ahead", type=int, default=settings.LEDGER_PARTITION_MONTHS_AHEAD)
        parser.add_argument("--since", help="First month to cover, YYYY-MM (default: this month).")

    def handle(self, *args, months_ahead, since, **options):
        today = timezone.now().date()
        start = today
        if since:
            try:
                start = dt.date.fromisoformat(f"{since}-01")
            except ValueError as exc:
                raise CommandError(f"--since must be YYYY-MM, got {since!r}") from exc
        if not 0 <= months_ahead <= MAX_MONTHS_AHEAD:
            raise CommandError(f"--months-ahead must be between 0 and {MAX_MONTHS_AHEAD}, got {months_ahead}")
        if not FIRST_YEAR <= start.year <= today.year:
            raise CommandError(f"--since must be a month from {FIRST_YEAR} to now, got {since!r}")
        months = (today.year - start.year) * 12 + today.month - start.month + months_ahead
        created = ensure_partitions(start=start, months_ahead=max(months, 0))
        for name in created:
            self.stdout.write(f"created {name}")
        self.stdout.write(f"{len(existing_partitions())} partitions; {len(created)} new")
