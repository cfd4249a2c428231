# sluice %post: $1 is 1 on a first install, 2 or more on an upgrade.
mkdir -p /etc/sluice/instances.d
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl enable sluice.service >/dev/null 2>&1 || :
    echo "sluice: enabled. Review /etc/sluice/sluice.toml (sluice check), then: systemctl start sluice"
elif [ -d /run/systemd/system ]; then
    systemctl try-restart sluice.service sluice-store.service >/dev/null 2>&1 || :
fi
