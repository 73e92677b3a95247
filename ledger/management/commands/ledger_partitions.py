import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from ledger.partitions import ensure_partitions, existing_partitions


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
        months = (today.year - start.year) * 12 + today.month - start.month + months_ahead
        created = ensure_partitions(start=start, months_ahead=max(months, 0))
        for name in created:
            self.stdout.write(f"created {name}")
        self.stdout.write(f"{len(existing_partitions())} partitions; {len(created)} new")
