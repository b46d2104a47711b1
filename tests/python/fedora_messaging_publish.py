"""Publishes one message with pika exactly as fedora-messaging 3 does
(Message._build_properties), with a user filter header; prints its message id.

Usage: fedora_messaging_publish.py EXCHANGE ROUTING_KEY JSON_BODY
"""
import datetime, json, sys, uuid
import pika
exchange, routing_key, body = sys.argv[1], sys.argv[2], sys.argv[3]
sent_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
headers = {
    "fedora_messaging_schema": "base.message",
    "sent-at": sent_at,
    "fedora_messaging_severity": 20,
    "priority": 0,
    "fedora_messaging_user_jcline": True,
}
properties = pika.BasicProperties(
    content_type="application/json", content_encoding="utf-8", delivery_mode=2,
    headers=headers, message_id=str(uuid.uuid4()), priority=0)
connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2f"))
channel = connection.channel()
channel.confirm_delivery()
channel.basic_publish(exchange, routing_key, body.encode("utf-8"), properties)
print(properties.message_id)
connection.close()
