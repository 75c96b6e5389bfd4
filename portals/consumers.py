"""Websocket consumers: thin, authenticated from scope, no synchronous ORM."""

from channels.generic.websocket import AsyncJsonWebsocketConsumer

EVENTS_GROUP = "events"
JOBS_GROUP = "jobs"


class EventStreamConsumer(AsyncJsonWebsocketConsumer):
    """The audit event stream and the job stream, for administrators."""

    groups_joined: tuple[str, ...] = (EVENTS_GROUP, JOBS_GROUP)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=4403)
            return
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def event_created(self, message: dict) -> None:
        await self.send_json({"type": "event.created", "event": message["payload"]})

    async def job_updated(self, message: dict) -> None:
        await self.send_json({"type": "job.updated", "job": message["payload"]})
