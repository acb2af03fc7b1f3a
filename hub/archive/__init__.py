"""The archive (档案记实): each tenant's notices of a month, as a printable page and XLSX."""
