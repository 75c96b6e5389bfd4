"""The VM portal (/vm-portal/): what a VM user sees of the engine — their own and granted VMs."""
