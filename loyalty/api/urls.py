from django.urls import path

from accounts import api as members
from campaigns import api as rewards
from ledger import api as ledger
from rules import api as events
from webhooks import api as webhooks

urlpatterns = [
    path("members", members.MemberListView.as_view(), name="member-list"),
    path("members/<str:external_id>", members.MemberDetailView.as_view(), name="member-detail"),
    path("members/<str:external_id>/balance", ledger.BalanceView.as_view(), name="member-balance"),
    path("members/<str:external_id>/transactions", ledger.TransactionListView.as_view(), name="member-transactions"),
    path("adjustments", ledger.AdjustmentView.as_view(), name="adjustment-create"),
    path("rewards", rewards.RewardListView.as_view(), name="reward-list"),
    path("redemptions", rewards.RedemptionCreateView.as_view(), name="redemption-create"),
    path("redemptions/<str:redemption_id>", rewards.RedemptionDetailView.as_view(), name="redemption-detail"),
    path("redemptions/<str:redemption_id>/capture", rewards.RedemptionCaptureView.as_view(), name="redemption-capture"),
    path("redemptions/<str:redemption_id>/void", rewards.RedemptionVoidView.as_view(), name="redemption-void"),
    path("redemptions/<str:redemption_id>/cancel", rewards.RedemptionCancelView.as_view(), name="redemption-cancel"),
    path("events", events.EventCreateView.as_view(), name="event-create"),
    path("events/batch", events.EventBatchView.as_view(), name="event-batch"),
    path("events/<str:event_id>", events.EventDetailView.as_view(), name="event-detail"),
    path("webhook_endpoints", webhooks.WebhookEndpointListView.as_view(), name="webhook-endpoint-list"),
    path("webhook_endpoints/<str:endpoint_id>", webhooks.WebhookEndpointDetailView.as_view(),
         name="webhook-endpoint-detail"),
]
