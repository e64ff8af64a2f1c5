"""The six classic patterns from Python (py-amqp), run by tests/compat/run.sh against 1 and 2
shards. Publishers and consumers use separate connections, so with 2 shards they often sit on
different shards. Every wait is bounded by WAIT_S."""

import os
import socket
import time
import uuid

import amqp

HOST = os.environ.get("RABBITMQ_HOST", "127.0.0.1")
PORT = int(os.environ.get("RABBITMQ_5672_TCP", "5672"))
WAIT_S = 10.0


def connect():
    connection = amqp.Connection(f"{HOST}:{PORT}", userid="guest", password="guest")
    connection.connect()
    return connection


def drain_until(connection, done):
    """Processes incoming frames until done() or WAIT_S passes."""
    deadline = time.monotonic() + WAIT_S
    while not done():
        remaining = deadline - time.monotonic()
        assert remaining > 0, "timed out waiting for deliveries"
        try:
            connection.drain_events(timeout=min(remaining, 0.5))
        except socket.timeout:
            pass


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_simple():
    publisher, consumer = connect(), connect()
    try:
        queue = name("hello")
        consumer.channel().queue_declare(queue, auto_delete=True)
        channel = consumer.channel()
        got = []
        channel.basic_consume(queue, callback=lambda m: got.append(m.body), no_ack=True)
        publisher.channel().basic_publish(amqp.Message(b"Hello World!"), "", queue)
        drain_until(consumer, lambda: got)
        assert got == [b"Hello World!"]
    finally:
        publisher.close()
        consumer.close()


def test_work_queue_fair_dispatch():
    publisher, busy, idle = connect(), connect(), connect()
    try:
        queue = name("tasks")
        publisher.channel().queue_declare(queue, auto_delete=True)
        busy_channel, idle_channel = busy.channel(), idle.channel()
        busy_got, idle_got = [], []
        for channel, got in ((busy_channel, busy_got), (idle_channel, idle_got)):
            channel.basic_qos(prefetch_size=0, prefetch_count=1, a_global=False)
        # The busy worker never acks: with prefetch 1 it holds one task and gets no more.
        busy_channel.basic_consume(queue, callback=busy_got.append)

        def finish(message):
            idle_got.append(message.body)
            idle_channel.basic_ack(message.delivery_tag)

        idle_channel.basic_consume(queue, callback=finish)
        channel = publisher.channel()
        for i in range(10):
            channel.basic_publish(amqp.Message(b"task %d" % i), "", queue)
        deadline = time.monotonic() + WAIT_S
        while len(busy_got) + len(idle_got) < 10:
            assert time.monotonic() < deadline, "tasks not all dispatched"
            for connection in (busy, idle):
                try:
                    connection.drain_events(timeout=0.05)
                except socket.timeout:
                    pass
        assert len(busy_got) == 1, busy_got
        assert len(idle_got) == 9, idle_got
    finally:
        for connection in (publisher, busy, idle):
            connection.close()


def bound_queue(channel, exchange, key=""):
    queue = channel.queue_declare("", exclusive=True).queue
    channel.queue_bind(queue, exchange, key)
    return queue


def collect(connection, channel, queues):
    got = {queue: [] for queue in queues}
    for queue in queues:
        channel.basic_consume(
            queue, callback=lambda m, q=queue: got[q].append(m.body), no_ack=True
        )
    return got


def test_publish_subscribe_fanout():
    publisher, subscriber = connect(), connect()
    try:
        exchange = name("logs")
        channel = subscriber.channel()
        channel.exchange_declare(exchange, "fanout", auto_delete=True)
        queues = [bound_queue(channel, exchange) for _ in range(2)]
        got = collect(subscriber, channel, queues)
        publisher.channel().basic_publish(amqp.Message(b"event"), exchange, "")
        drain_until(subscriber, lambda: all(got[q] for q in queues))
        assert all(got[q] == [b"event"] for q in queues)
    finally:
        publisher.close()
        subscriber.close()


def test_routing_direct():
    publisher, subscriber = connect(), connect()
    try:
        exchange = name("direct_logs")
        channel = subscriber.channel()
        channel.exchange_declare(exchange, "direct", auto_delete=True)
        errors, infos = bound_queue(channel, exchange, "error"), bound_queue(channel, exchange, "info")
        got = collect(subscriber, channel, [errors, infos])
        out = publisher.channel()
        out.basic_publish(amqp.Message(b"disk full"), exchange, "error")
        out.basic_publish(amqp.Message(b"started"), exchange, "info")
        out.basic_publish(amqp.Message(b"ignored"), exchange, "debug")
        drain_until(subscriber, lambda: got[errors] and got[infos])
        assert got[errors] == [b"disk full"]
        assert got[infos] == [b"started"]
    finally:
        publisher.close()
        subscriber.close()


def test_topics():
    publisher, subscriber = connect(), connect()
    try:
        exchange = name("topic_logs")
        channel = subscriber.channel()
        channel.exchange_declare(exchange, "topic", auto_delete=True)
        orange = bound_queue(channel, exchange, "*.orange.*")
        lazy = bound_queue(channel, exchange, "lazy.#")
        got = collect(subscriber, channel, [orange, lazy])
        out = publisher.channel()
        for key in ("quick.orange.rabbit", "lazy.brown.fox", "lazy.orange.male.rabbit", "quick.brown.fox"):
            out.basic_publish(amqp.Message(key.encode()), exchange, key)
        drain_until(subscriber, lambda: len(got[orange]) == 1 and len(got[lazy]) == 2)
        assert got[orange] == [b"quick.orange.rabbit"]
        assert got[lazy] == [b"lazy.brown.fox", b"lazy.orange.male.rabbit"]
    finally:
        publisher.close()
        subscriber.close()


def test_rpc():
    server, client = connect(), connect()
    try:
        rpc_queue = name("rpc_queue")
        server_channel = server.channel()
        server_channel.queue_declare(rpc_queue, auto_delete=True)

        def serve(request):
            n = int(request.body)
            reply = amqp.Message(
                str(n * n).encode(), correlation_id=request.properties["correlation_id"]
            )
            server_channel.basic_publish(reply, "", request.properties["reply_to"])
            server_channel.basic_ack(request.delivery_tag)

        server_channel.basic_consume(rpc_queue, callback=serve)
        client_channel = client.channel()
        callback_queue = client_channel.queue_declare("", exclusive=True).queue
        replies = []
        client_channel.basic_consume(callback_queue, callback=replies.append, no_ack=True)
        correlation_id = str(uuid.uuid4())
        request = amqp.Message(b"7", reply_to=callback_queue, correlation_id=correlation_id)
        client_channel.basic_publish(request, "", rpc_queue)
        deadline = time.monotonic() + WAIT_S
        while not replies:
            assert time.monotonic() < deadline, "no RPC reply"
            for connection in (server, client):
                try:
                    connection.drain_events(timeout=0.05)
                except socket.timeout:
                    pass
        assert replies[0].body == b"49"
        assert replies[0].properties["correlation_id"] == correlation_id
    finally:
        server.close()
        client.close()


def test_tls_external_login_is_the_certificate_cn():
    """amqps with a client certificate (CN=guest, made by run.sh) and SASL EXTERNAL: the
    broker offers EXTERNAL only here, and logs the connection in as the certificate's CN."""
    certs = os.environ["COMPAT_TLS_CERTS"]
    connection = amqp.Connection(
        f"{HOST}:{os.environ['RABBITMQ_5671_TCP']}",
        login_method="EXTERNAL",
        ssl={
            "ca_certs": f"{certs}/ca_certificate.pem",
            "certfile": f"{certs}/client_certificate.pem",
            "keyfile": f"{certs}/client_key.pem",
        },
    )
    connection.connect()
    try:
        assert b"EXTERNAL" in connection.mechanisms
        channel = connection.channel()
        queue = f"tls-{uuid.uuid4()}"
        channel.queue_declare(queue, auto_delete=False)
        channel.basic_publish(amqp.Message(b"over tls"), "", queue)
        deadline = time.monotonic() + WAIT_S
        message = None
        while message is None:
            assert time.monotonic() < deadline, "message not routed"
            message = channel.basic_get(queue, no_ack=True)
        assert message.body == b"over tls"
        channel.queue_delete(queue)
    finally:
        connection.close()
