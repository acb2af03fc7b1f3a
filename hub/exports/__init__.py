"""What every CSV and XLSX the hub writes has in common (billing's statements, and any later
export): cells that no spreadsheet evaluates."""
