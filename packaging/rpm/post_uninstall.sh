# sluice %postun: $1 is 0 on erase. rpm has no purge: /var/lib/sluice (ledger, quota
# store, tokens) is kept; delete it by hand to forget everything.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
