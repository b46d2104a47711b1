"""A passive fedmsg publisher, as a Fedora service is one: fedmsg binds a PUB socket at
the endpoint named in the config file and subscribers (the hub) connect to it.

    fedmsg_publisher.py CONFIG_FILE NAME

Publishes {"n": 1}, {"n": 2}, ... with modname "switchyard" and topic "count", every
50 ms until killed, and prints one JSON line per message sent: {"n": N, "msg_id": ID}.
"""

import json
import sys
import time

import fedmsg
import fedmsg.config


def main():
    config_file, name = sys.argv[1], sys.argv[2]
    config = fedmsg.config.load_config([], None, filenames=[config_file], invalidate_cache=True)
    config.update(name=name, active=False, post_init_sleep=0)
    context = fedmsg.init(**config)

    def report(envelope):
        print(json.dumps({"n": envelope["msg"]["n"], "msg_id": envelope["msg_id"]}), flush=True)

    n = 0
    while True:
        n += 1
        context.publish(topic="count", modname="switchyard", msg={"n": n}, pre_fire_hook=report)
        time.sleep(0.05)


if __name__ == "__main__":
    main()
