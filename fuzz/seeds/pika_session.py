#!/usr/bin/env python3
"""One pika session per scenario, for record.py: what RabbitMQ users' code sends."""
import sys

import pika

port = int(sys.argv[1])
params = pika.ConnectionParameters(host="127.0.0.1", port=port, heartbeat=0,
                                   credentials=pika.PlainCredentials("guest", "guest"))


def session(body):
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    body(channel)
    connection.close()


def declare_publish_get(ch):
    ch.queue_declare("seed-q", durable=True, arguments={"x-max-length": 10, "x-message-ttl": 60000,
                                                        "x-dead-letter-exchange": "amq.fanout"})
    ch.confirm_delivery()
    props = pika.BasicProperties(content_type="text/plain", delivery_mode=2, priority=3,
                                 correlation_id="c1", reply_to="r", expiration="60000",
                                 message_id="m1", timestamp=1700000000, type="t", user_id="guest",
                                 app_id="a", headers={"k": "v", "n": 1, "l": [1, "x"],
                                                      "t": {"nested": True}})
    ch.basic_publish("", "seed-q", b"hello" * 50, props)
    ch.basic_get("seed-q", auto_ack=False)
    ch.basic_recover(requeue=True)
    ch.queue_purge("seed-q")
    ch.queue_delete("seed-q")


def exchanges_and_bindings(ch):
    ch.exchange_declare("seed-topic", "topic", auto_delete=True)
    ch.exchange_declare("seed-headers", "headers", arguments={"alternate-exchange": "amq.fanout"})
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "seed-topic", "a.*.#")
    ch.queue_bind(q, "seed-headers", arguments={"x-match": "all", "h": "v"})
    ch.exchange_bind("seed-headers", "seed-topic", "a.#")
    ch.basic_publish("seed-topic", "a.b.c", b"x", pika.BasicProperties(headers={"h": "v"}))
    ch.queue_unbind(q, "seed-topic", "a.*.#")
    ch.exchange_unbind("seed-headers", "seed-topic", "a.#")
    ch.exchange_delete("seed-headers")


def consume_ack_nack(ch):
    ch.basic_qos(prefetch_count=5)
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(5):
        ch.basic_publish("", q, b"m%d" % i)
    seen = []

    def on_message(c, method, props, body):
        seen.append(method.delivery_tag)
        if len(seen) == 1:
            c.basic_nack(method.delivery_tag, requeue=True)
        elif len(seen) == 2:
            c.basic_reject(method.delivery_tag, requeue=False)
        else:
            c.basic_ack(method.delivery_tag, multiple=True)
        if len(seen) >= 5:
            c.stop_consuming()

    tag = ch.basic_consume(q, on_message)
    ch.connection.call_later(5, ch.stop_consuming)
    ch.start_consuming()
    ch.basic_cancel(tag)


def transactions(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.tx_select()
    ch.basic_publish("", q, b"tx1")
    ch.tx_rollback()
    ch.basic_publish("", q, b"tx2")
    ch.tx_commit()
    method, _, _ = ch.basic_get(q)
    if method:
        ch.basic_ack(method.delivery_tag)
    ch.tx_commit()


def errors(ch):
    try:
        ch.queue_declare("seed-missing", passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        pass


for scenario in (declare_publish_get, exchanges_and_bindings, consume_ack_nack, transactions, errors):
    session(scenario)
