# sluice %preun: $1 is 0 on erase, 1 on an upgrade (then nothing stops).
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop sluice.service sluice-store.service >/dev/null 2>&1 || :
    fi
    systemctl disable sluice.service sluice-store.service >/dev/null 2>&1 || :
    # With the package gone nothing could take the limits off again.
    if [ -r /etc/sluice/sluice.toml ]; then
        /usr/bin/sluice release --config /etc/sluice/sluice.toml || :
    fi
fi
